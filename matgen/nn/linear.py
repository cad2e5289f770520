"""Equivariant linear map: e3nn's ``o3.Linear`` evaluated without a slice per input irrep.

e3nn's generated code takes each input irrep with ``narrow``. The backward pass of every such
slice writes a zero-filled tensor of the whole input and copies the slice's gradient into it,
and autograd then adds these full-size tensors up: on a ``(N, 1280)`` input of ten irreps that is
ten zero-filled copies per call, more time than the arithmetic. :class:`IrrepsLinear` splits the
input once (its backward is one concatenation) and applies each path's weights as one matrix
product over the channel axis, the components of an irrep as rows (not as a batch of small
products with the weights broadcast, which ran as a batched product at a few GFLOP/s).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

__all__ = ["IrrepsLinear"]


class IrrepsLinear(o3.Linear):
    """``(..., dim in) -> (..., dim out)``: ``o3.Linear(irreps_in, irreps_out)`` (same weights,
    state dict and numbers up to rounding), all paths between equal irreps, no biases.

    Args:
        irreps_in: input irreps.
        irreps_out: output irreps.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> None:
        super().__init__(irreps_in, irreps_out)
        self._in_dims = [mul_ir.dim for mul_ir in self.irreps_in]
        self._weight_sizes = [math.prod(ins.path_shape) for ins in self.instructions]
        #: per output irrep, the indices of the instructions that feed it
        self._by_output = [
            [k for k, ins in enumerate(self.instructions) if ins.i_out == i_out]
            for i_out in range(len(self.irreps_out))
        ]

    def forward(
        self,
        features: torch.Tensor,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if weight is not None or bias is not None:
            return super().forward(features, weight, bias)
        lead = features.shape[:-1]
        x = features.reshape(-1, self.irreps_in.dim)
        n = x.shape[0]
        xs = torch.split(x, self._in_dims, dim=1) if len(self._in_dims) > 1 else (x,)
        ws = torch.split(self.weight, self._weight_sizes) if self.instructions else ()
        outs = []
        for (mul_out, ir), paths in zip(self.irreps_out, self._by_output, strict=True):
            if mul_out == 0:
                continue
            acc = None
            for k in paths:
                ins = self.instructions[k]
                mul_in = self.irreps_in[ins.i_in].mul
                w = ws[k].view(mul_in, mul_out) * ins.path_weight
                xi = xs[ins.i_in]
                if ir.dim > 1:  # (N * d, mul_in): the channel axis last, one matrix product
                    xi = xi.view(n, mul_in, ir.dim).transpose(1, 2).reshape(n * ir.dim, mul_in)
                y = xi @ w
                acc = y if acc is None else acc + y
            if acc is None:
                outs.append(x.new_zeros(n, mul_out * ir.dim))
            else:
                outs.append(
                    acc
                    if ir.dim == 1
                    else acc.view(n, ir.dim, mul_out).transpose(1, 2).reshape(n, -1)
                )
        out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
        return out.reshape(*lead, self.irreps_out.dim)
