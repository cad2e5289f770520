"""Tabulated radial functions for inference: piecewise quintic Hermite interpolation.

A radial function ``R: r -> R^W`` (for MACE, the radial MLP of every interaction composed with
the Bessel features: one weight per channel and coupling path) depends on the edge length
alone. On ``K`` equal cells of ``[lo, hi]`` with nodes ``r_k = lo + k h``, the table keeps
``R``, ``R'`` and ``R''`` at the nodes (from the exact function, by forward-mode
differentiation in float64); on a cell, ``R`` is the unique quintic that matches them at both
ends. The interpolant is twice continuously differentiable, its error is at most

    |R(r) - R_table(r)| <= h^6 max |R^(6)| / 46080        (at the cell midpoints, t = 1/2)

and the derivative used for forces and stress is the interpolant's own, so forces stay the exact
gradient of the (interpolated) energy. :meth:`RadialTable.build` doubles ``K`` until the error
measured against the exact function at the midpoints and at ``t = 1/5`` of every cell is at
most ``tol`` times the largest ``|R|`` of its column.

Evaluating the table reads six coefficient rows per edge, where the MLP spends four matrix
products per edge forward and as many backward; edges are visited sorted by cell, so
consecutive edges share coefficients in cache. The same idea compresses DeePMD-kit's embedding
networks (Lu et al., "DP Compress", 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from matgen.data.threads import parallel_ranges, run_ranges

__all__ = ["RadialTable"]

#: Fewest edges per thread of the compiled kernels.
_EDGE_GRAIN = 2048

# Monomial coefficients of the quintic Hermite basis on [0, 1]: row i gives t^i's coefficient
# of the basis functions for (y0, h y0', h^2 y0'', y1, h y1', h^2 y1'').
_HERMITE = np.array(
    [
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.5, 0.0, 0.0, 0.0],
        [-10.0, -6.0, -1.5, 10.0, -4.0, 0.5],
        [15.0, 8.0, 1.5, -15.0, 7.0, -1.0],
        [-6.0, -3.0, -0.5, 6.0, -3.0, 0.5],
    ]
)


class RadialTable:
    """Quintic Hermite tables of radial functions, one per output group, on one grid.

    Calling it maps edge lengths ``(E,)`` (on the host, float32 or float64, within
    ``[lo, hi]``) to one ``(E, W_g)`` tensor per group, differentiable in the lengths (a second
    derivative, e.g. a force loss, runs as eager operations).

    Attributes:
        lo, hi: the tabulated interval (Å).
        cells: number of cells ``K``.
        max_error: the measured error of :meth:`build`, relative to each column's largest value.
    """

    def __init__(
        self,
        coefficients: Sequence[np.ndarray],
        lo: float,
        hi: float,
        max_error: float = float("nan"),
    ) -> None:
        self.coefficients = [np.ascontiguousarray(c) for c in coefficients]
        self.cells = int(self.coefficients[0].shape[0])
        self.lo, self.hi = float(lo), float(hi)
        self.inv_h = self.cells / (self.hi - self.lo)
        self.max_error = float(max_error)
        self.dtype = self.coefficients[0].dtype
        self.torch_dtype = torch.from_numpy(self.coefficients[0][:0]).dtype

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.coefficients)

    @classmethod
    def build(
        cls,
        function: Callable[[torch.Tensor], Sequence[torch.Tensor]],
        lo: float,
        hi: float,
        *,
        dtype: torch.dtype = torch.float64,
        tol: float = 1e-10,
        cells: int = 256,
        max_bytes: int = 256 * 2**20,
    ) -> RadialTable | None:
        """Tabulate ``function`` (float64 ``(K,)`` lengths -> ``(K, W_g)`` per group) on
        ``[lo, hi]`` with cells doubled from ``cells`` until the measured relative error is at
        most ``tol``; ``None`` if that would take more than ``max_bytes`` of coefficients
        (``cpu-small``: 21 MiB in float64, MACE-MP-0 medium: 84 MiB) or the function is not
        finite."""
        if not hi > lo > 0:
            raise ValueError(f"a radial table needs 0 < lo < hi, got lo={lo}, hi={hi}")
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        with torch.no_grad():
            probe = [v.shape[1] for v in function(torch.tensor([lo, hi], dtype=torch.float64))]
        width = sum(probe)
        k = int(cells)
        while k * 6 * width * np_dtype.itemsize <= max_bytes:
            coefficients = _fit(function, lo, hi, k)
            error = _error(function, coefficients, lo, hi)
            if not math.isfinite(error):
                return None  # a non-finite function (diverged parameters): nothing to tabulate
            if error <= tol:
                return cls([c.astype(np_dtype) for c in coefficients], lo, hi, max_error=error)
            # the error falls as h^6: skip the doublings that cannot reach tol
            k *= 2 ** max(1, math.ceil(math.log2((error / tol) ** (1 / 6))))
        return None

    def covers(self, r: torch.Tensor) -> bool:
        """Whether every length lies in the tabulated interval."""
        return r.numel() == 0 or (float(r.min()) >= self.lo and float(r.max()) <= self.hi)

    def __call__(self, r: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if r.dtype != self.torch_dtype:
            raise TypeError(f"this table holds {self.dtype} values, the lengths are {r.dtype}")
        return _Interpolate.apply(r, self)

    # ------------------------------------------------------------------ kernels
    def _order(self, ra: np.ndarray) -> np.ndarray:
        cell = np.clip(((ra - self.lo) * self.inv_h).astype(np.int64), 0, self.cells - 1)
        return np.argsort(cell, kind="stable")

    def _values(self, ra: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
        from matgen.nn._radial_table_kernel import table_forward

        outs = [np.empty((len(ra), c.shape[2]), dtype=ra.dtype) for c in self.coefficients]
        ranges = parallel_ranges(len(ra), grain=_EDGE_GRAIN)

        def run(_: int, a: int, b: int) -> None:  # edges order[a:b]: rows of their own
            for coef, out in zip(self.coefficients, outs, strict=True):
                table_forward(ra, order[a:b], coef, self.lo, self.inv_h, out)

        run_ranges(run, ranges)
        return outs

    def _slope_product(
        self, ra: np.ndarray, order: np.ndarray, grads: Sequence[np.ndarray | None]
    ) -> np.ndarray:
        from matgen.nn._radial_table_kernel import table_backward

        gr = np.zeros_like(ra)
        ranges = parallel_ranges(len(ra), grain=_EDGE_GRAIN)

        def run(_: int, a: int, b: int) -> None:
            for coef, g in zip(self.coefficients, grads, strict=True):
                if g is not None:
                    table_backward(ra, order[a:b], coef, self.lo, self.inv_h, g, gr)

        run_ranges(run, ranges)
        return gr

    def _slopes_eager(self, r: torch.Tensor) -> list[torch.Tensor]:
        """``dR/dr`` per group ``(E, W_g)`` as differentiable tensor operations."""
        x = (r - self.lo) * self.inv_h
        k = x.detach().long().clamp(0, self.cells - 1)
        t = (x - k.to(x.dtype))[:, None]
        slopes = []
        for coef in self.coefficients:
            c = torch.from_numpy(coef)[k]  # (E, 6, W)
            s = c[:, 5] * 5.0
            for i in (4, 3, 2, 1):
                s = s * t + c[:, i] * float(i)
            slopes.append(s * self.inv_h)
        return slopes


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, table):
        ctx.set_materialize_grads(False)
        ra = r.detach().contiguous().numpy()
        order = table._order(ra)
        ctx.save_for_backward(r)
        ctx.table, ctx.order = table, order
        return tuple(torch.from_numpy(v) for v in table._values(ra, order))

    @staticmethod
    def backward(ctx, *grads):
        (r,) = ctx.saved_tensors
        table = ctx.table
        if all(g is None for g in grads):
            return None, None
        if torch.is_grad_enabled():  # a differentiable backward (create_graph)
            gr = torch.zeros_like(r)
            for g, slope in zip(grads, table._slopes_eager(r), strict=True):
                if g is not None:
                    gr = gr + (g * slope).sum(dim=1)
            return gr, None
        ga = [None if g is None else g.contiguous().numpy() for g in grads]
        gr = table._slope_product(r.detach().contiguous().numpy(), ctx.order, ga)
        return torch.from_numpy(gr), None


def _fit(function, lo: float, hi: float, cells: int) -> list[np.ndarray]:
    """Monomial coefficients ``(K, 6, W_g)`` per group, in float64."""
    nodes = torch.linspace(lo, hi, cells + 1, dtype=torch.float64)
    ones = torch.ones_like(nodes)

    def first(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.func.jvp(lambda y: tuple(function(y)), (x,), (ones,))[1])

    with torch.no_grad():
        values = function(nodes)
    with torch.enable_grad():  # forward-over-forward through silu needs grad mode
        d1, d2 = torch.func.jvp(first, (nodes,), (ones,))
    h = (hi - lo) / cells
    hermite = torch.from_numpy(_HERMITE)
    out = []
    for y, dy, ddy in zip(values, d1, d2, strict=True):
        y, dy, ddy = y.detach(), h * dy.detach(), h * h * ddy.detach()
        ends = torch.stack([y[:-1], dy[:-1], ddy[:-1], y[1:], dy[1:], ddy[1:]], dim=1)
        out.append(torch.einsum("ij,kjw->kiw", hermite, ends).contiguous().numpy())
    return out


def _error(function, coefficients: list[np.ndarray], lo: float, hi: float) -> float:
    """Largest interpolation error at ``t = 1/2`` and ``t = 1/5`` of every cell, relative to
    each column's largest ``|R|`` there."""
    cells = coefficients[0].shape[0]
    h = (hi - lo) / cells
    worst = 0.0
    for frac in (0.5, 0.2):
        r = lo + h * (np.arange(cells) + frac)
        with torch.no_grad():
            exact = function(torch.from_numpy(r))
        powers = frac ** np.arange(6)
        for coef, ref in zip(coefficients, exact, strict=True):
            ref = ref.numpy()
            approx = np.einsum("i,kiw->kw", powers, coef)
            scale = np.abs(ref).max(axis=0)
            scale = np.where(scale > 0, scale, max(float(scale.max()), 1e-300))
            err = float((np.abs(approx - ref) / scale).max())
            worst = err if not err <= worst else worst  # NaN propagates
    return worst
