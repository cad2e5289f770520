"""Element-dependent linear map: e3nn's fully connected tensor product with an element one-hot.

MACE's skip connections are ``o3.FullyConnectedTensorProduct(irreps_in, "Zx0e", irreps_out)``
applied to node features and the one-hot ``δ(z_n)`` of each node's element. With a one-hot
second input the product is a linear map of the features chosen by the element:

    out_n[w, m] = α_p / sqrt(2l + 1) sum_u W_p[u, z_n, w] x_n[u, m]     for each path p = (l -> l)

e3nn evaluates it as a contraction with the whole one-hot, that is ``Z`` times the arithmetic and
``Z`` copies of the weights per node. :class:`ElementLinear` keeps e3nn's module, weights and
numbers. On CPUs it applies each node's own matrices: in evaluation mode with a compiled kernel
(numba, :mod:`matgen.nn._element_linear_kernel`), in training mode by grouping the nodes by
element (one matrix product per present element and path). Other devices use e3nn's evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn import o3

from matgen.data.threads import parallel_ranges, run_ranges

__all__ = ["ElementLinear"]

#: Fewest nodes per thread of the compiled kernels.
_NODE_GRAIN = 64


class ElementLinear(o3.FullyConnectedTensorProduct):
    """``(x (N, dim in), one-hot (N, Z)) -> (N, dim out)``; the second input must be one-hot.

    Args:
        irreps_in: irreps of the node features.
        num_elements: ``Z``, the width of the one-hot.
        irreps_out: irreps of the output.
    """

    def __init__(self, irreps_in: o3.Irreps, num_elements: int, irreps_out: o3.Irreps) -> None:
        super().__init__(irreps_in, o3.Irreps(f"{num_elements}x0e"), irreps_out)
        self.num_elements = int(num_elements)
        # (weight offset, slice in, mul in, mul out, dim, α), in the order of the outputs
        self._paths: list[tuple[int, slice, int, int, int, float]] = []
        offset = 0
        for ins in self.instructions:
            mul_in, ir = self.irreps_in1[ins.i_in1]
            mul_out = self.irreps_out[ins.i_out].mul
            self._paths.append(
                (
                    offset,
                    self.irreps_in1.slices()[ins.i_in1],
                    mul_in,
                    mul_out,
                    ir.dim,
                    ins.path_weight / math.sqrt(ir.dim),  # the Wigner symbol of (l, 0 -> l)
                )
            )
            offset += mul_in * self.num_elements * mul_out
        self._path_inputs = [ins.i_in1 for ins in self.instructions]
        self._in_dims = [mul_ir.dim for mul_ir in self.irreps_in1]
        #: grouped evaluation needs one path per output irrep, in output order
        self._grouped = [ins.i_out for ins in self.instructions] == list(
            range(len(self.irreps_out))
        )
        out_starts = [sl.start for sl in self.irreps_out.slices()]
        columns = [
            (o, sl.start, out_starts[k], u, v, d)
            for k, (o, sl, u, v, d, _) in enumerate(self._paths)
        ]
        self._tables = tuple(np.asarray(t, dtype=np.int64) for t in zip(*columns, strict=True))
        self._alphas = np.asarray([p[5] for p in self._paths], dtype=np.float64)

    def forward(self, x: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.shape[0] == 0 or not self._grouped:
            return super().forward(x, node_attrs)
        species = node_attrs.argmax(dim=1)
        if not self.training and x.dtype in (torch.float32, torch.float64):
            return _CompiledElementLinear.apply(x, self.weight.to(x.dtype), species, self)
        order = torch.argsort(species, stable=True)
        present, counts = torch.unique_consecutive(species[order], return_counts=True)
        # splits, not slices: a slice's backward writes a zero-filled copy of the whole input
        groups = torch.split(x[order], counts.tolist(), dim=0)
        n_el = self.num_elements
        weights = [
            self.weight[o : o + u * n_el * v].view(u, n_el, v) for o, _, u, v, _, _ in self._paths
        ]
        parts = []
        for z, rows in zip(present.tolist(), groups, strict=True):
            count = rows.shape[0]
            cols = torch.split(rows, self._in_dims, dim=1)
            parts.append(
                torch.cat(
                    [
                        (cols[i].view(count, u, d).transpose(1, 2) @ (w[:, z] * alpha))
                        .transpose(1, 2)
                        .reshape(count, v * d)
                        for i, (_, _, u, v, d, alpha), w in zip(
                            self._path_inputs, self._paths, weights, strict=True
                        )
                    ],
                    dim=1,
                )
            )
        return torch.cat(parts, dim=0).index_select(0, torch.argsort(order))

    def _backward_eager(
        self, x: torch.Tensor, weight: torch.Tensor, species: torch.Tensor, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The compiled backward pass by differentiable operations: gradients of ``x`` and of
        the flat weights."""
        n, n_el = x.shape[0], self.num_elements
        out_slices = self.irreps_out.slices()
        gx, gw = torch.zeros_like(x), []
        for k, (o, sl, u, v, d, alpha) in enumerate(self._paths):
            w = weight[o : o + u * n_el * v].view(u, n_el, v)
            xp = x[:, sl].view(n, u, d)
            gp = grad[:, out_slices[k]].view(n, v, d)
            piece = alpha * torch.bmm(w[:, species].transpose(0, 1), gp).reshape(n, u * d)
            gx = gx.index_add(1, torch.arange(sl.start, sl.stop, device=x.device), piece)
            outer = torch.einsum("num,nvm->unv", xp, gp)
            gw.append(alpha * torch.zeros_like(w).index_add(1, species, outer).reshape(-1))
        return gx, torch.cat(gw)


class _CompiledElementLinear(torch.autograd.Function):
    """``(x (N, dim in), flat weights, species (N,)) -> (N, dim out)`` by the numba kernels; a
    backward pass that must be differentiable runs the same arithmetic as eager operations."""

    @staticmethod
    def forward(ctx, x, weight, species, module):
        from matgen.nn._element_linear_kernel import element_linear_forward

        xa, wa, za = (t.detach().contiguous().numpy() for t in (x, weight, species))
        out = np.zeros((len(xa), module.irreps_out.dim), dtype=xa.dtype)
        paths = (module.num_elements, *module._tables, module._alphas.astype(out.dtype))
        run_ranges(
            lambda _, lo, hi: element_linear_forward(xa[lo:hi], wa, za[lo:hi], *paths, out[lo:hi]),
            parallel_ranges(len(xa), grain=_NODE_GRAIN),
        )
        ctx.save_for_backward(x, weight, species)
        ctx.module = module
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        from matgen.nn._element_linear_kernel import element_linear_backward

        x, weight, species = ctx.saved_tensors
        module = ctx.module
        if torch.is_grad_enabled():
            return *module._backward_eager(x, weight, species, grad), None, None
        xa, wa, za = (t.detach().contiguous().numpy() for t in (x, weight, species))
        ga = grad.contiguous().numpy()
        gx = np.zeros(xa.shape, xa.dtype)
        weight_grad = bool(ctx.needs_input_grad[1])
        paths = (module.num_elements, *module._tables, module._alphas.astype(gx.dtype))
        ranges = parallel_ranges(len(xa), grain=_NODE_GRAIN)
        # without a weight gradient the kernel gets a one-number buffer it never touches
        gws = [np.zeros(wa.shape if weight_grad else 1, wa.dtype) for _ in ranges]

        def run(k: int, lo: int, hi: int) -> None:  # nodes lo .. hi - 1; own weight buffer
            gw = gws[k]
            nodes = (xa[lo:hi], wa, za[lo:hi], *paths)
            element_linear_backward(*nodes, ga[lo:hi], gx[lo:hi], gw, weight_grad)

        run_ranges(run, ranges)
        gw = torch.from_numpy(sum(gws[1:], gws[0])) if weight_grad else None
        return torch.from_numpy(gx), gw, None, None
