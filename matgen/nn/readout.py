"""Product block and per-layer energy readouts of MACE.

Product block: ``h_i = W A_i^{(ν<=correlation)} + sc_i``: the symmetric contraction of the
atomic basis, a channel-mixing linear map per irrep, and the residual from the interaction.
Readouts map each layer's features to one scalar site energy: linear for inner layers, a
one-hidden-layer gated MLP for the last (Batatia et al., 2022, eq. 13).
"""

from __future__ import annotations

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn

from matgen.nn.linear import IrrepsLinear
from matgen.nn.symmetric_contraction import SymmetricContraction

__all__ = ["LinearReadout", "MLPReadout", "ProductBlock"]


class ProductBlock(nn.Module):
    """``(A (N, C, D), sc (N, dim) | None, elements (N,)) -> (N, dim target)``."""

    def __init__(
        self,
        *,
        coupling_irreps: o3.Irreps,
        target_irreps: o3.Irreps,
        correlation: int,
        num_elements: int,
        num_channels: int,
    ) -> None:
        super().__init__()
        self.target_irreps = o3.Irreps(target_irreps)
        self.contraction = SymmetricContraction(
            coupling_irreps,
            target_irreps,
            correlation=correlation,
            num_elements=num_elements,
            num_channels=num_channels,
        )
        self.linear = IrrepsLinear(self.target_irreps, self.target_irreps)

    def forward(
        self, basis: torch.Tensor, sc: torch.Tensor | None, elements: torch.Tensor
    ) -> torch.Tensor:
        out = self.linear(self.contraction(basis, elements))
        return out if sc is None else out + sc


class LinearReadout(nn.Module):
    """``(N, dim) -> (N,)`` site energy, linear in the scalar channels."""

    def __init__(self, irreps_in: o3.Irreps) -> None:
        super().__init__()
        self.linear = IrrepsLinear(o3.Irreps(irreps_in), o3.Irreps("0e"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLPReadout(nn.Module):
    """``(N, dim) -> (N,)``: linear to ``mlp_irreps`` scalars, SiLU (normalised), linear."""

    def __init__(self, irreps_in: o3.Irreps, mlp_irreps: o3.Irreps) -> None:
        super().__init__()
        mlp_irreps = o3.Irreps(mlp_irreps)
        self.linear_1 = o3.Linear(o3.Irreps(irreps_in), mlp_irreps)
        self.activation = e3nn_nn.Activation(mlp_irreps, [torch.nn.functional.silu])
        self.linear_2 = o3.Linear(mlp_irreps, o3.Irreps("0e"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(x))).squeeze(-1)
