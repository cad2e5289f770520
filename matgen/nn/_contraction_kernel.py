"""Compiled (numba, no GIL) CPU kernels of :class:`matgen.nn.symmetric_contraction.SymmetricContraction`.

Per node ``n`` of element ``z`` and channel ``c`` (innermost, contiguous):

- monomials ``m[q] = m[factor[q]] * x[n, coord[q]]`` (``m[q] = x[n, coord[q]]`` where
  ``factor[q] < 0``), lower degrees first, kept in a ``(Q, C)`` buffer;
- for every row ``r = (o, k)`` of the coefficient matrix with entries ``start[r] .. start[r+1]``
  of ``(e_q, e_coef)``: ``out[n, o] += w[z, k] * sum_t e_coef[t] m[e_q[t]]``.

The backward pass runs the same loops in reverse. Nothing of size ``Q x N x C`` is written,
where the eager evaluation writes the monomials, their products with the coefficients and the
element weights of every node.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True)
def _monomials(x, n, coord, factor, mono):
    channels = x.shape[2]
    for q in range(coord.shape[0]):
        f = factor[q]
        d = coord[q]
        if f < 0:
            for c in range(channels):
                mono[q, c] = x[n, d, c]
        else:
            for c in range(channels):
                mono[q, c] = mono[f, c] * x[n, d, c]


@njit(cache=True, nogil=True, fastmath=True)
def contraction_forward(x, species, w, coord, factor, r_out, r_k, r_start, e_q, e_coef, out):
    """``x`` ``(N, D, C)``, ``w`` ``(Z, K, C)`` -> ``out`` ``(N, O, C)`` (accumulated)."""
    channels = x.shape[2]
    mono = np.empty((coord.shape[0], channels), dtype=x.dtype)
    acc = np.empty(channels, dtype=x.dtype)
    for n in range(x.shape[0]):
        _monomials(x, n, coord, factor, mono)
        z = species[n]
        for r in range(r_out.shape[0]):
            for c in range(channels):
                acc[c] = 0.0
            for t in range(r_start[r], r_start[r + 1]):
                q = e_q[t]
                coef = e_coef[t]
                for c in range(channels):
                    acc[c] += coef * mono[q, c]
            o = r_out[r]
            k = r_k[r]
            for c in range(channels):
                out[n, o, c] += acc[c] * w[z, k, c]


@njit(cache=True, nogil=True, fastmath=True)
def contraction_backward(
    x, species, w, coord, factor, r_out, r_k, r_start, e_q, e_coef, g, gx, gw, weight_grad
):
    """``g`` ``(N, O, C)`` -> ``gx`` ``(N, D, C)`` and, if ``weight_grad``, ``gw`` (accumulated)."""
    channels = x.shape[2]
    n_mono = coord.shape[0]
    mono = np.empty((n_mono, channels), dtype=x.dtype)
    gmono = np.empty((n_mono, channels), dtype=x.dtype)
    tmp = np.empty(channels, dtype=x.dtype)
    for n in range(x.shape[0]):
        _monomials(x, n, coord, factor, mono)
        gmono[:, :] = 0.0
        z = species[n]
        for r in range(r_out.shape[0]):
            o = r_out[r]
            k = r_k[r]
            for c in range(channels):
                tmp[c] = w[z, k, c] * g[n, o, c]
            for t in range(r_start[r], r_start[r + 1]):
                q = e_q[t]
                coef = e_coef[t]
                for c in range(channels):
                    gmono[q, c] += coef * tmp[c]
            if weight_grad:
                for t in range(r_start[r], r_start[r + 1]):
                    q = e_q[t]
                    coef = e_coef[t]
                    for c in range(channels):
                        gw[z, k, c] += coef * mono[q, c] * g[n, o, c]
        for q in range(n_mono - 1, -1, -1):
            f = factor[q]
            d = coord[q]
            if f < 0:
                for c in range(channels):
                    gx[n, d, c] += gmono[q, c]
            else:
                for c in range(channels):
                    gmono[f, c] += gmono[q, c] * x[n, d, c]
                    gx[n, d, c] += gmono[q, c] * mono[f, c]
