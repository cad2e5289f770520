"""Channel-wise ("uvu") equivariant convolution: e3nn's tensor product and the neighbour sum,
evaluated path by path.

For a receiving node ``i``, senders ``j``, sender features ``x_j`` (``C`` channels of each irrep
``l1``), edge harmonics ``Y_ij`` and per-edge weights ``w_ij`` (one per path and channel), every
coupling path ``p = (l1, l2 -> l3)`` contributes

    m_i[p, u, m3] = sum_j w_ij[p, u] * α_p * sum_{m1, m2} W3j[m1, m2, m3] x_j[u, m1] Y_ij[l2, m2]

which is exactly e3nn's ``TensorProduct`` with ``"uvu"`` instructions and external weights,
followed by ``index_add`` over edges (same weight layout, same output layout, same ``α_p``).
The evaluation differs: per path, the harmonics are contracted with the Wigner symbols first,
``H_ij = α_p W3j · Y_ij`` ``(d1, d3)`` with no channel axis, the sender features are scaled by
their path weights, one batched matrix product per edge gives the path's messages, and they are
summed into the nodes at once. Each per-edge ``(E, C, d3)`` tensor is written once and read once,
against several passes in e3nn's generated code, which is what bounds this operation on CPUs.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

__all__ = ["ChannelwiseConvolution"]


class ChannelwiseConvolution(nn.Module):
    """``(x (N, dim node), Y (E, dim edge), w (E, weight_numel), sender, receiver) -> (N, dim out)``.

    Args:
        irreps_node: node irreps, every multiplicity equal (the channel count ``C``).
        irreps_edge: edge irreps, one copy of each (spherical harmonics).
        irreps_out: one output irrep per instruction, multiplicity ``C`` (e3nn's order).
        instructions: ``(i_node, i_edge, i_out, "uvu", True)`` tuples, as for e3nn.
    """

    def __init__(
        self,
        irreps_node: o3.Irreps,
        irreps_edge: o3.Irreps,
        irreps_out: o3.Irreps,
        instructions: list[tuple[int, int, int, str, bool]],
    ) -> None:
        super().__init__()
        self.irreps_node = o3.Irreps(irreps_node)
        self.irreps_edge = o3.Irreps(irreps_edge)
        self.irreps_out = o3.Irreps(irreps_out)
        muls = {mul for mul, _ in self.irreps_node}
        if len(muls) != 1 or any(mul != 1 for mul, _ in self.irreps_edge):
            raise ValueError(
                f"a channel-wise convolution needs equal multiplicities in {self.irreps_node} "
                f"and single copies in {self.irreps_edge}"
            )
        if any(ins[3] != "uvu" for ins in instructions):
            raise ValueError("only 'uvu' instructions are supported")
        self.channels = muls.pop()
        # e3nn's own bookkeeping fixes the path normalisation and the weight layout.
        reference = o3.TensorProduct(
            self.irreps_node,
            self.irreps_edge,
            self.irreps_out,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.weight_numel = reference.weight_numel
        outs = [ins.i_out for ins in reference.instructions]
        if sorted(outs) != list(range(len(self.irreps_out))):
            raise ValueError("every output irrep must come from exactly one instruction")
        self._paths: list[tuple[int, int, int, int]] = []  # (i_node, i_out, d1, d3)
        for k, ins in enumerate(reference.instructions):
            l1 = self.irreps_node[ins.i_in1].ir
            l2 = self.irreps_edge[ins.i_in2].ir
            l3 = self.irreps_out[ins.i_out].ir
            coupling = torch.zeros(self.irreps_edge.dim, l1.dim, l3.dim, dtype=torch.float64)
            w3j = o3.wigner_3j(l1.l, l2.l, l3.l, dtype=torch.float64)  # (d1, d2, d3)
            coupling[self.irreps_edge.slices()[ins.i_in2]] = ins.path_weight * w3j.transpose(0, 1)
            self.register_buffer(
                f"coupling_{k}",
                coupling.reshape(self.irreps_edge.dim, -1).to(torch.get_default_dtype()),
                persistent=False,
            )
            self._paths.append((ins.i_in1, ins.i_out, l1.dim, l3.dim))

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
    ) -> torch.Tensor:
        n, e, c = node_feats.shape[0], edge_attrs.shape[0], self.channels
        slices = self.irreps_node.slices()
        senders = {
            i: node_feats[:, slices[i]].reshape(n, c, -1).index_select(0, sender)
            for i in {p[0] for p in self._paths}
        }
        # unbind, not w[:, k]: its backward stacks the path gradients once, where each select's
        # backward would write a zero-filled copy of all the weights
        w = weights.view(e, len(self._paths), c).unbind(1)
        outputs: list[torch.Tensor | None] = [None] * len(self.irreps_out)
        for k, (i, i_out, d1, d3) in enumerate(self._paths):
            h = (edge_attrs @ getattr(self, f"coupling_{k}")).view(e, d1, d3)
            xw = senders[i] * w[k][:, :, None]  # (E, C, d1)
            msg = xw * h if d1 == 1 else torch.bmm(xw, h)  # (E, C, d3)
            node = msg.new_zeros(n, c, d3).index_add(0, receiver, msg)
            outputs[i_out] = node.reshape(n, c * d3)
        return torch.cat(outputs, dim=1)
