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
    """``out[n, o + v d + m] += α sum_u W[u, z_n, v] x[n, i + u d + m]`` for every path.

    Each weight row ``W[u, z_n, :]`` is read once per node and path and applied to all ``d``
    components, accumulated in a ``(d, mul_out)`` buffer: a contiguous inner loop over ``v``."""
    tmp = np.empty((dim.max(), mul_out.max()), dtype=x.dtype)
    for n in range(x.shape[0]):
        z = species[n]
        xn = x[n]
        outn = out[n]
        for p in range(w_off.shape[0]):
            d = dim[p]
            mv = mul_out[p]
            a = alpha[p]
            tmp[:d, :mv] = 0
            for u in range(mul_in[p]):
                base = w_off[p] + (u * n_el + z) * mv
                wrow = w[base : base + mv]
                first = i_off[p] + u * d
                for m in range(d):
                    xv = a * xn[first + m]
                    row = tmp[m]
                    for v in range(mv):
                        row[v] += xv * wrow[v]
            for m in range(d):
                row = tmp[m]
                for v in range(mv):
                    outn[o_off[p] + v * d + m] += row[v]


@njit(cache=True, nogil=True, fastmath=True)
def element_linear_backward(
    x, w, species, n_el, w_off, i_off, o_off, mul_in, mul_out, dim, alpha, g, gx, gw, weight_grad
):
    """``g`` -> ``gx`` and, if ``weight_grad``, ``gw`` (accumulated); the output gradient of a
    node and path is first gathered into a ``(d, mul_out)`` buffer."""
    grow = np.empty((dim.max(), mul_out.max()), dtype=x.dtype)
    zero = x.dtype.type(0)  # accumulators of x's type: a float64 sum would convert every term
    for n in range(x.shape[0]):
        z = species[n]
        xn = x[n]
        gn = g[n]
        gxn = gx[n]
        for p in range(w_off.shape[0]):
            d = dim[p]
            mv = mul_out[p]
            a = alpha[p]
            for m in range(d):
                row = grow[m]
                for v in range(mv):
                    row[v] = gn[o_off[p] + v * d + m]
            for u in range(mul_in[p]):
                base = w_off[p] + (u * n_el + z) * mv
                wrow = w[base : base + mv]
                first = i_off[p] + u * d
                for m in range(d):
                    row = grow[m]
                    acc = zero
                    for v in range(mv):
                        acc += wrow[v] * row[v]
                    gxn[first + m] += a * acc
                if weight_grad:
                    gwrow = gw[base : base + mv]
                    for m in range(d):
                        xv = a * xn[first + m]
                        row = grow[m]
                        for v in range(mv):
                            gwrow[v] += xv * row[v]
