"""Element-dependent linear map: e3nn's fully connected tensor product with an element one-hot.

MACE's skip connections are ``o3.FullyConnectedTensorProduct(irreps_in, "Zx0e", irreps_out)``
applied to node features and the one-hot ``δ(z_n)`` of each node's element. With a one-hot
second input the product is a linear map of the features chosen by the element:

    out_n[w, m] = α_p / sqrt(2l + 1) sum_u W_p[u, z_n, w] x_n[u, m]     for each path p = (l -> l)

e3nn evaluates it as a contraction with the whole one-hot, that is ``Z`` times the arithmetic and
``Z`` copies of the weights per node. :class:`ElementLinear` keeps e3nn's module, weights and
numbers, and on CPUs groups the nodes by element and applies each present element's matrices
once (one matrix product per element and path). Other devices use e3nn's evaluation.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

__all__ = ["ElementLinear"]


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
        #: grouped evaluation needs one path per output irrep, in output order
        self._grouped = [ins.i_out for ins in self.instructions] == list(
            range(len(self.irreps_out))
        )

    def forward(self, x: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.shape[0] == 0 or not self._grouped:
            return super().forward(x, node_attrs)
        species = node_attrs.argmax(dim=1)
        order = torch.argsort(species, stable=True)
        present, counts = torch.unique_consecutive(species[order], return_counts=True)
        xs = x[order]
        n_el = self.num_elements
        weights = [
            self.weight[o : o + u * n_el * v].view(u, n_el, v) for o, _, u, v, _, _ in self._paths
        ]
        parts, start = [], 0
        for z, count in zip(present.tolist(), counts.tolist(), strict=True):
            rows = xs[start : start + count]
            parts.append(
                torch.cat(
                    [
                        (rows[:, sl].view(count, u, d).transpose(1, 2) @ (w[:, z] * alpha))
                        .transpose(1, 2)
                        .reshape(count, v * d)
                        for (_, sl, u, v, d, alpha), w in zip(self._paths, weights, strict=True)
                    ],
                    dim=1,
                )
            )
            start += count
        return torch.cat(parts, dim=0).index_select(0, torch.argsort(order))
