"""Compiled (numba, no GIL) CPU kernels of :class:`matgen.nn.radial_table.RadialTable`.

``coef`` ``(K, 6, W)``: per cell ``k`` the monomial coefficients of the quintic
``R(t) = sum_i coef[k, i] t^i`` with ``t = (r - lo) / h - k`` in ``[0, 1]``. Edges are visited in
``order`` (sorted by cell, so that consecutive edges read the same cell's coefficients) and each
writes its own row: no two edges write the same memory.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def _cell(r, e, lo, inv_h, last):
    """Cell of edge ``e`` and the position ``t`` in it (in ``r``'s dtype)."""
    x = (r[e] - lo) * inv_h
    k = min(max(int(x), 0), last)
    return k, r.dtype.type(x - k)


@njit(cache=True, nogil=True, fastmath=True)
def table_forward(r, order, coef, lo, inv_h, out):
    """``out[e] = R(r[e])`` for the edges ``order``."""
    last = coef.shape[0] - 1
    width = coef.shape[2]
    for q in range(order.shape[0]):
        e = order[q]
        k, t = _cell(r, e, lo, inv_h, last)
        c = coef[k]
        row = out[e]
        for w in range(width):
            row[w] = (
                (((c[5, w] * t + c[4, w]) * t + c[3, w]) * t + c[2, w]) * t + c[1, w]
            ) * t + c[0, w]


@njit(cache=True, nogil=True, fastmath=True)
def table_backward(r, order, coef, lo, inv_h, g, gr):
    """``gr[e] += sum_w g[e, w] dR_w/dr (r[e])`` for the edges ``order``."""
    last = coef.shape[0] - 1
    width = coef.shape[2]
    zero, two, three = r.dtype.type(0), r.dtype.type(2), r.dtype.type(3)
    four, five = r.dtype.type(4), r.dtype.type(5)
    for q in range(order.shape[0]):
        e = order[q]
        k, t = _cell(r, e, lo, inv_h, last)
        c = coef[k]
        ge = g[e]
        acc = zero
        for w in range(width):
            slope = (
                ((five * c[5, w] * t + four * c[4, w]) * t + three * c[3, w]) * t + two * c[2, w]
            ) * t + c[1, w]
            acc += ge[w] * slope
        gr[e] += acc * inv_h
