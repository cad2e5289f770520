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
against several passes in e3nn's generated code.

On CPUs, the whole operation (gather, coupling, weighting and neighbour sum, and its backward
pass) runs as one compiled kernel (:mod:`matgen.nn._conv_kernel`) in evaluation mode, so that no
per-edge tensor is written at all: the eager operations spend most of their time moving small
per-edge tensors through memory. Training (``module.training``) uses the eager operations above,
and so does a second derivative taken through the kernel (a force loss in evaluation mode).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from e3nn import o3
from torch import nn

from matgen.data.threads import parallel_ranges, run_ranges

__all__ = ["ChannelwiseConvolution"]

#: Fewest edges per thread of the compiled kernels.
_EDGE_GRAIN = 4096


class _CompiledConvolution(torch.autograd.Function):
    """``(x (N, D_in, C), y (E, D_edge), w (E, P, C)) -> (N, D_out, C)`` by the numba kernels.

    A backward pass that must itself be differentiable (``create_graph=True``, e.g. a force
    loss) runs the same arithmetic as eager operations instead."""

    @staticmethod
    def forward(ctx, x, y, w, sender, receiver, module, paired):
        from matgen.nn._conv_kernel import conv_forward

        xa, ya, wa, sa, ra = (t.detach().contiguous().numpy() for t in (x, y, w, sender, receiver))
        tables = module._tables[xa.dtype]
        ranges = parallel_ranges(len(ya), grain=_EDGE_GRAIN, step=2)
        outs = [np.zeros((len(xa), module._out_rows, xa.shape[2]), dtype=xa.dtype) for _ in ranges]

        def run(k: int, lo: int, hi: int) -> None:  # edges lo .. hi - 1 into their own buffer
            wk = wa[lo >> paired : hi >> paired]
            conv_forward(xa, ya[lo:hi], wk, sa[lo:hi], ra[lo:hi], int(paired), *tables, outs[k])

        run_ranges(run, ranges)
        out = sum(outs[1:], outs[0])
        ctx.save_for_backward(x, y, w, sender, receiver)
        ctx.module, ctx.paired = module, paired
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        from matgen.nn._conv_kernel import conv_backward

        x, y, w, sender, receiver = ctx.saved_tensors
        nones = (None,) * 4
        if torch.is_grad_enabled():
            grads = ctx.module._backward_eager(x, y, w, sender, receiver, grad, ctx.paired)
            return *grads, *nones
        xa, ya, wa, sa, ra = (t.detach().contiguous().numpy() for t in (x, y, w, sender, receiver))
        ga = grad.contiguous().numpy()
        tables = ctx.module._tables[xa.dtype]
        gy, gw = np.empty_like(ya), np.empty_like(wa)  # written by the kernel
        ranges = parallel_ranges(len(ya), grain=_EDGE_GRAIN, step=2)
        gxs = [np.zeros(xa.shape, xa.dtype) for _ in ranges]
        p = int(ctx.paired)

        def run(k: int, lo: int, hi: int) -> None:  # senders' gradients into their own buffer
            edges = (ya[lo:hi], wa[lo >> p : hi >> p], sa[lo:hi], ra[lo:hi], p)
            conv_backward(xa, *edges, *tables, ga, gxs[k], gy[lo:hi], gw[lo >> p : hi >> p])

        run_ranges(run, ranges)
        gx = sum(gxs[1:], gxs[0])
        return torch.from_numpy(gx), torch.from_numpy(gy), torch.from_numpy(gw), *nones


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
        in_rows = np.cumsum([0] + [ir.dim for _, ir in self.irreps_node])
        out_rows = np.cumsum([0] + [ir.dim for _, ir in self.irreps_out])
        # Tables of the compiled kernel: per path (row in, d1, row out, d3) and the start of its
        # coupling entries (m2, m1 * d3 + m3, coefficient).
        path_rows: list[tuple[int, int, int, int]] = []
        entries: list[tuple[int, int, float]] = []
        starts = [0]
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
            path_rows.append((in_rows[ins.i_in1], l1.dim, out_rows[ins.i_out], l3.dim))
            flat = coupling.reshape(self.irreps_edge.dim, -1)
            m2, h = torch.nonzero(flat, as_tuple=True)
            entries += zip(m2.tolist(), h.tolist(), flat[m2, h].tolist(), strict=True)
            starts.append(len(entries))
        self._path_rows = [tuple(int(v) for v in row) for row in path_rows]
        m2s, hs, coefficients = zip(*entries, strict=True)
        index_tables = tuple(
            np.asarray(t, dtype=np.int64) for t in (*zip(*path_rows, strict=True), starts, m2s, hs)
        )
        self._tables = {
            np.dtype(dt): (*index_tables, np.asarray(coefficients, dtype=dt))
            for dt in (np.float64, np.float32)
        }
        self._out_rows = int(out_rows[-1])
        #: component rows of each node irrep and each output irrep (split sizes of the layouts)
        self._node_dims = [mul_ir.dim for mul_ir in self.irreps_node]
        self._out_dims = [int(b - a) for a, b in itertools.pairwise(out_rows)]

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        *,
        paired: bool = False,
    ) -> torch.Tensor:
        """``paired``: edges ``2k`` and ``2k + 1`` are the two directions of one pair and share
        one row of ``weights`` ``(E / 2, weight_numel)``."""
        compiled = node_feats.dtype in (torch.float32, torch.float64)
        if compiled and node_feats.device.type == "cpu" and not self.training:
            return self._forward_compiled(node_feats, edge_attrs, weights, sender, receiver, paired)
        if paired:
            weights = weights.repeat_interleave(2, dim=0)
        return self._forward_eager(node_feats, edge_attrs, weights, sender, receiver)

    def _forward_eager(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
    ) -> torch.Tensor:
        n, e, c = node_feats.shape[0], edge_attrs.shape[0], self.channels
        parts = torch.split(node_feats, self._node_dims, dim=1)
        senders = {
            i: parts[i].reshape(n, c, -1).index_select(0, sender)
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

    def _forward_compiled(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        paired: bool,
    ) -> torch.Tensor:
        n, c, dtype = node_feats.shape[0], self.channels, node_feats.dtype
        # splits, not slices: a slice's backward writes a zero-filled copy of the whole tensor
        parts = torch.split(node_feats, self._node_dims, dim=1)
        x = torch.cat(
            [
                part.view(n, c, ir.dim).transpose(1, 2)
                for part, (_, ir) in zip(parts, self.irreps_node, strict=True)
            ],
            dim=1,
        )
        w = weights.to(dtype).view(-1, len(self._paths), c)
        out = _CompiledConvolution.apply(x, edge_attrs.to(dtype), w, sender, receiver, self, paired)
        parts = torch.split(out, self._out_dims, dim=1)
        return torch.cat([part.transpose(1, 2).reshape(n, -1) for part in parts], dim=1)

    def _backward_eager(
        self,
        x: torch.Tensor,
        edge_attrs: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        grad: torch.Tensor,
        paired: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The compiled backward pass by differentiable operations: ``grad`` ``(N, D_out, C)``
        -> gradients of ``x`` ``(N, D_in, C)``, ``edge_attrs`` and ``weights`` ``(E, P, C)``
        (``(E / 2, P, C)`` when ``paired``)."""
        if paired:
            weights = weights.repeat_interleave(2, dim=0)
        gx = torch.zeros_like(x)
        gy = torch.zeros_like(edge_attrs)
        gw = []
        for k, (i0, d1, o0, d3) in enumerate(self._path_rows):
            coupling = getattr(self, f"coupling_{k}").to(x.dtype)
            h = (edge_attrs @ coupling).view(-1, d1, d3)
            g = grad[:, o0 : o0 + d3].index_select(0, receiver)  # (E, d3, C)
            xs = x[:, i0 : i0 + d1].index_select(0, sender)  # (E, d1, C)
            w = weights[:, k, None, :]
            t = torch.bmm(h, g)  # sum_m3 H[m1, m3] g[m3, c]
            gx = gx.index_add(
                0, sender, torch.nn.functional.pad(t * w, (0, 0, i0, x.shape[1] - i0 - d1))
            )
            gw.append((xs * t).sum(dim=1))
            gh = torch.bmm(xs * w, g.transpose(1, 2))  # (E, d1, d3)
            gy = gy + gh.reshape(-1, d1 * d3) @ coupling.T
        gw = torch.stack(gw, dim=1)
        if paired:
            gw = gw.view(-1, 2, *gw.shape[1:]).sum(dim=1)
        return gx, gy, gw
