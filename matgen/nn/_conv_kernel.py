"""Compiled (numba, no GIL) CPU kernels of :class:`matgen.nn.convolution.ChannelwiseConvolution`.

Layouts (channel innermost, so that every inner loop runs over ``C`` contiguous numbers):

- ``x`` ``(N, D_in, C)``: sender features, the components of every node irrep stacked;
- ``y`` ``(E, D_edge)``: edge harmonics; ``w`` ``(E, P, C)``: per-edge path weights, or
  ``(E / 2, P, C)`` with ``pair_shift = 1`` when edges ``2k`` and ``2k + 1`` are one pair's two
  directions and share their weights (which depend on the distance alone);
- ``out`` ``(N, D_out, C)``: the summed messages, the components of every output irrep stacked.

Path ``k`` reads rows ``p_in[k] .. p_in[k] + d1`` of ``x`` and writes rows
``p_out[k] .. p_out[k] + d3`` of ``out``. Its coupling ``H_e[m1, m3] = sum_m2 c * y[e, m2]``
is given by the sparse entries ``e_start[k] .. e_start[k + 1]`` of ``(e_m2, e_h, e_coef)`` with
``e_h = m1 * d3 + m3``. The forward pass is, per edge ``e = (j -> i)`` and path ``k``,

    out[i, m3, c] += sum_m1 H_e[m1, m3] * w[e, k, c] * x[j, m1, c]

and the backward pass gives the gradients of ``x``, ``y`` and ``w`` from that of ``out``. Inner
loops run over one-dimensional rows (``x[j, m]``, ``out[i, m]``), which the compiler vectorises.
Each edge is read once and nothing of size ``E x C`` is written except the weight gradient, where
eager PyTorch writes several such tensors per path in each direction.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Largest irrep dimension (``l <= 7``) and largest ``d1 * d3`` of a path.
_MAX_DIM = 15
_MAX_H = _MAX_DIM * _MAX_DIM


@njit(cache=True, inline="always")
def _coupling(h, ye, size, lo, hi, e_m2, e_h, e_coef) -> None:
    """``h[m1 * d3 + m3] = H_e[m1, m3]`` from entries ``lo .. hi - 1`` and the harmonics ``ye``."""
    for q in range(size):
        h[q] = 0.0
    for t in range(lo, hi):
        h[e_h[t]] += e_coef[t] * ye[e_m2[t]]


@njit(cache=True, nogil=True, fastmath=True)
def conv_forward(
    x, y, w, sender, receiver, pair_shift, p_in, p_d1, p_out, p_d3, e_start, e_m2, e_h, e_coef, out
):
    n_edges = y.shape[0]
    channels = x.shape[2]
    n_paths = p_in.shape[0]
    h = np.zeros(_MAX_H, dtype=x.dtype)
    xw = np.empty((_MAX_DIM, channels), dtype=x.dtype)
    for e in range(n_edges):
        s = sender[e]
        r = receiver[e]
        we = e >> pair_shift
        ye = y[e]
        for k in range(n_paths):
            d1 = p_d1[k]
            d3 = p_d3[k]
            _coupling(h, ye, d1 * d3, e_start[k], e_start[k + 1], e_m2, e_h, e_coef)
            i0 = p_in[k]
            o0 = p_out[k]
            wk = w[we, k]
            for m1 in range(d1):
                xr = x[s, i0 + m1]
                xwr = xw[m1]
                for c in range(channels):
                    xwr[c] = xr[c] * wk[c]
            for m3 in range(d3):
                orow = out[r, o0 + m3]
                for m1 in range(d1):
                    hv = h[m1 * d3 + m3]
                    xwr = xw[m1]
                    for c in range(channels):
                        orow[c] += hv * xwr[c]


@njit(cache=True, nogil=True, fastmath=True)
def conv_backward(
    x,
    y,
    w,
    sender,
    receiver,
    pair_shift,
    p_in,
    p_d1,
    p_out,
    p_d3,
    e_start,
    e_m2,
    e_h,
    e_coef,
    g,
    gx,
    gy,
    gw,
):
    """``g`` ``(N, D_out, C)`` -> ``gx`` (accumulated), ``gy`` and ``gw`` (written: their
    previous contents are ignored; a pair's two edges come in one call)."""
    n_edges = y.shape[0]
    channels = x.shape[2]
    n_paths = p_in.shape[0]
    h = np.zeros(_MAX_H, dtype=x.dtype)
    gh = np.zeros(_MAX_H, dtype=x.dtype)
    t_row = np.empty(channels, dtype=x.dtype)
    xw = np.empty(channels, dtype=x.dtype)
    zero = x.dtype.type(0)  # accumulators of x's type: a float64 sum would convert every term
    for e in range(n_edges):
        s = sender[e]
        r = receiver[e]
        we = e >> pair_shift
        ye = y[e]
        gye = gy[e]
        for m in range(gye.shape[0]):
            gye[m] = 0.0
        first = pair_shift == 0 or (e & 1) == 0  # the pair's first edge writes its weight row
        for k in range(n_paths):
            d1 = p_d1[k]
            d3 = p_d3[k]
            _coupling(h, ye, d1 * d3, e_start[k], e_start[k + 1], e_m2, e_h, e_coef)
            i0 = p_in[k]
            o0 = p_out[k]
            wk = w[we, k]
            gwk = gw[we, k]
            if first:
                for c in range(channels):
                    gwk[c] = 0.0
            for m1 in range(d1):
                xr = x[s, i0 + m1]
                gxr = gx[s, i0 + m1]
                for c in range(channels):
                    t_row[c] = 0.0
                    xw[c] = xr[c] * wk[c]
                # t[c] = sum_m3 H[m1, m3] g[i, m3, c];  gH[m1, m3] = sum_c x w g
                for m3 in range(d3):
                    hv = h[m1 * d3 + m3]
                    gr = g[r, o0 + m3]
                    acc = zero
                    for c in range(channels):
                        gv = gr[c]
                        t_row[c] += hv * gv
                        acc += xw[c] * gv
                    gh[m1 * d3 + m3] = acc
                for c in range(channels):
                    gxr[c] += t_row[c] * wk[c]
                    gwk[c] += xr[c] * t_row[c]
            for t in range(e_start[k], e_start[k + 1]):
                gye[e_m2[t]] += e_coef[t] * gh[e_h[t]]
