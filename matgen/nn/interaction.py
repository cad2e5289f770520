"""MACE interaction blocks: the equivariant convolution that forms a node's atomic basis ``A``.

For node ``i`` with neighbours ``j`` (edge vector ``r_ji = x_i - x_j`` pointing at ``i``):

    h'_j   = W_up h_j                                           (channel mixing per irrep)
    m_i    = (1 / n_avg) W_out sum_j R(|r_ji|) ⊙ (h'_j ⊗ Y(r_ji))   (channel-wise "uvu" product)

``R`` is an MLP of the radial features giving one weight per channel and coupling path, ``Y``
the spherical harmonics up to ``max_ell`` (component normalisation) and ``n_avg`` the average
number of neighbours of the training set. ``m_i`` is returned per channel as ``(N, C, D)`` over
the coupling irreps ``⊕_l l`` that feed the symmetric contraction.

Two variants, as in MACE: :class:`ElementInteraction` applies an element-dependent linear map to
``m_i`` (MACE's first layer), :class:`ResidualInteraction` also returns an element-dependent
linear map of the input features for the residual connection of the product block.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from matgen.nn.convolution import ChannelwiseConvolution
from matgen.nn.element_linear import ElementLinear
from matgen.nn.linear import IrrepsLinear
from matgen.nn.radial import RadialMLP

__all__ = [
    "ElementInteraction",
    "InteractionBlock",
    "ResidualInteraction",
    "convolution_irreps",
    "irreps_to_channels",
]


def convolution_irreps(
    node_irreps: o3.Irreps, edge_irreps: o3.Irreps, target_irreps: o3.Irreps
) -> tuple[o3.Irreps, list[tuple[int, int, int, str, bool]]]:
    """Output irreps and instructions of the channel-wise product ``node ⊗ edge``: every
    coupling path whose output irrep occurs in ``target_irreps``, sorted by output irrep."""
    outs: list[tuple[int, o3.Irrep]] = []
    instructions = []
    for i, (mul, ir_in) in enumerate(node_irreps):
        for j, (_, ir_edge) in enumerate(edge_irreps):
            for ir_out in ir_in * ir_edge:
                if ir_out in target_irreps:
                    instructions.append((i, j, len(outs), "uvu", True))
                    outs.append((mul, ir_out))
    irreps_out, permutation, _ = o3.Irreps(outs).sort()
    instructions = sorted(
        [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions],
        key=lambda ins: ins[2],
    )
    return irreps_out, instructions


def irreps_to_channels(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """``(N, dim)`` in e3nn layout with equal multiplicities ``C`` -> ``(N, C, sum (2l+1))``."""
    n = x.shape[0]
    # split, not a slice per irrep: a slice's backward writes a zero-filled copy of all of x
    parts = torch.split(x, [mul_ir.dim for mul_ir in irreps], dim=1)
    return torch.cat(
        [part.reshape(n, mul, ir.dim) for part, (mul, ir) in zip(parts, irreps, strict=True)],
        dim=-1,
    )


class InteractionBlock(nn.Module):
    """Shared convolution of both variants.

    Args:
        node_irreps: irreps of the input node features ``h``.
        edge_irreps: spherical-harmonics irreps of ``Y``.
        edge_feat_dim: number of radial features.
        target_irreps: ``C`` copies of each coupling irrep (the message irreps).
        hidden_irreps: irreps of the block's output features (residual variant).
        num_elements: number of species of the element one-hot ``(N, num_elements)``.
        avg_num_neighbors: ``n_avg``.
        radial_mlp: hidden widths of the radial MLP.
    """

    def __init__(
        self,
        *,
        node_irreps: o3.Irreps,
        edge_irreps: o3.Irreps,
        edge_feat_dim: int,
        target_irreps: o3.Irreps,
        hidden_irreps: o3.Irreps,
        num_elements: int,
        avg_num_neighbors: float,
        radial_mlp: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.node_irreps = o3.Irreps(node_irreps)
        self.edge_irreps = o3.Irreps(edge_irreps)
        self.target_irreps = o3.Irreps(target_irreps)
        self.hidden_irreps = o3.Irreps(hidden_irreps)
        self.num_elements = int(num_elements)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.linear_up = IrrepsLinear(self.node_irreps, self.node_irreps)
        mid_irreps, instructions = convolution_irreps(
            self.node_irreps, self.edge_irreps, self.target_irreps
        )
        self.conv_tp = ChannelwiseConvolution(
            self.node_irreps, self.edge_irreps, mid_irreps, instructions
        )
        self.radial_mlp = RadialMLP(
            [edge_feat_dim, *radial_mlp, self.conv_tp.weight_numel], torch.nn.functional.silu
        )
        self.linear = IrrepsLinear(mid_irreps, self.target_irreps)

    def convolve(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        radial_weights: torch.Tensor,
        edge_index: torch.Tensor,
        paired: bool = False,
    ) -> torch.Tensor:
        """``(N, dim node) -> (N, dim target)``: ``W_out sum_j R ⊙ (W_up h_j ⊗ Y) / n_avg``.
        ``radial_weights`` ``(E, weight_numel)`` is ``R``: this block's ``radial_mlp`` of the
        edges' radial features (or the model's table of it). ``edge_index[0]`` receives,
        ``edge_index[1]`` sends. ``paired``: edges ``2k`` and ``2k + 1`` are one pair's two
        directions and ``radial_weights`` has one row per pair."""
        receiver, sender = edge_index
        h = self.linear_up(node_feats)
        summed = self.conv_tp(h, edge_attrs, radial_weights, sender, receiver, paired=paired)
        return self.linear(summed) / self.avg_num_neighbors


class ElementInteraction(InteractionBlock):
    """MACE's first-layer block: message, then an element-dependent linear map; no residual."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.skip_tp = ElementLinear(self.target_irreps, self.num_elements, self.target_irreps)

    def forward(
        self,
        node_attrs: torch.Tensor,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        radial_weights: torch.Tensor,
        edge_index: torch.Tensor,
        paired: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """Returns the message ``(N, C, D)`` and no residual."""
        message = self.convolve(node_feats, edge_attrs, radial_weights, edge_index, paired)
        message = self.skip_tp(message, node_attrs)
        return irreps_to_channels(message, self.target_irreps), None


class ResidualInteraction(InteractionBlock):
    """MACE's residual block: message, plus ``sc = W_z h`` (element-dependent) for the residual."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.skip_tp = ElementLinear(self.node_irreps, self.num_elements, self.hidden_irreps)

    def forward(
        self,
        node_attrs: torch.Tensor,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        radial_weights: torch.Tensor,
        edge_index: torch.Tensor,
        paired: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the message ``(N, C, D)`` and the residual ``(N, dim hidden)``."""
        sc = self.skip_tp(node_feats, node_attrs)
        message = self.convolve(node_feats, edge_attrs, radial_weights, edge_index, paired)
        return irreps_to_channels(message, self.target_irreps), sc
