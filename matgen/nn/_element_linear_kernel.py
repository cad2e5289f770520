"""Compiled (numba, no GIL) CPU kernels of :class:`matgen.nn.element_linear.ElementLinear`.

``x`` ``(N, dim in)`` and ``out`` ``(N, dim out)`` in e3nn's layout; ``w`` the module's flat
weights; per path ``p``: the weight offset ``w_off``, the first input and output columns
``i_off`` and ``o_off``, the multiplicities ``mul_in`` and ``mul_out``, the irrep dimension
``dim`` and the factor ``alpha``. Inner loops run over the contiguous output multiplicity.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True)
def element_linear_forward(
    x, w, species, n_el, w_off, i_off, o_off, mul_in, mul_out, dim, alpha, out
):
    """``out[n, o + v d + m] += α sum_u W[u, z_n, v] x[n, i + u d + m]`` for every path."""
    tmp = np.empty(mul_out.max(), dtype=x.dtype)
    for n in range(x.shape[0]):
        z = species[n]
        xn = x[n]
        outn = out[n]
        for p in range(w_off.shape[0]):
            d = dim[p]
            mv = mul_out[p]
            for m in range(d):
                for v in range(mv):
                    tmp[v] = 0.0
                for u in range(mul_in[p]):
                    xv = alpha[p] * xn[i_off[p] + u * d + m]
                    base = w_off[p] + (u * n_el + z) * mv
                    for v in range(mv):
                        tmp[v] += xv * w[base + v]
                for v in range(mv):
                    outn[o_off[p] + v * d + m] += tmp[v]


@njit(cache=True, nogil=True, fastmath=True)
def element_linear_backward(
    x, w, species, n_el, w_off, i_off, o_off, mul_in, mul_out, dim, alpha, g, gx, gw, weight_grad
):
    """``g`` -> ``gx`` and, if ``weight_grad``, ``gw`` (accumulated)."""
    grow = np.empty(mul_out.max(), dtype=x.dtype)
    for n in range(x.shape[0]):
        z = species[n]
        xn = x[n]
        gn = g[n]
        gxn = gx[n]
        for p in range(w_off.shape[0]):
            d = dim[p]
            mv = mul_out[p]
            for m in range(d):
                for v in range(mv):
                    grow[v] = gn[o_off[p] + v * d + m]
                for u in range(mul_in[p]):
                    base = w_off[p] + (u * n_el + z) * mv
                    acc = 0.0
                    for v in range(mv):
                        acc += w[base + v] * grow[v]
                    gxn[i_off[p] + u * d + m] += alpha[p] * acc
                    if weight_grad:
                        xv = alpha[p] * xn[i_off[p] + u * d + m]
                        for v in range(mv):
                            gw[base + v] += xv * grow[v]
