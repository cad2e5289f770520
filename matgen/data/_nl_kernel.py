"""Compiled (numba, no GIL) kernel of :func:`matgen.data.neighbors.batched_neighbor_list`.

Each system arrives in a rotated frame where its lattice rows are lower-triangular,
``a0 = (t00, 0, 0)``, ``a1 = (t10, t11, 0)``, ``a2 = (t20, t21, t22)`` with positive diagonal
(a QR decomposition of the cell). For an ordered pair ``(i, j)`` with ``r0 = x_j - x_i`` the
images ``S`` with ``|r0 + S @ T| < cutoff`` are then enumerated exactly, one axis at a time:
the ``z`` component fixes the range of ``S2``; for each ``S2`` the remaining disc fixes ``S1``;
for each ``(S2, S1)`` the remaining segment fixes ``S0``. No candidate image is outside the
sphere, so the work is proportional to the pairs and the edges, whatever the cell's shape.
A non-periodic direction allows only ``S = 0`` there. Each unordered pair is enumerated once and
written in both directions, ``(i, j, S)`` and ``(j, i, -S)``, as edges ``2k`` and ``2k + 1`` (an
atom's own images too: ``(i, i, S)`` and ``(i, i, -S)``), so that models can evaluate functions of
the pair distance once per pair.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _bounds(center: float, half: float, inverse_step: float, periodic: bool) -> tuple[int, int]:
    """Integers ``s`` with ``|center + s * step| < half`` (inclusive ``lo .. hi``)."""
    if not periodic:
        return (0, 0) if abs(center) < half else (1, 0)
    return (
        math.floor((-half - center) * inverse_step) + 1,
        math.ceil((half - center) * inverse_step) - 1,
    )


@njit(cache=True, inline="always")
def _write_pair(out_i, out_j, out_s, k, i, j, s0, s1, s2) -> None:
    """Edges ``k = (i, j, S)`` and ``k + 1 = (j, i, -S)``."""
    out_i[k] = i
    out_j[k] = j
    out_s[k, 0] = s0
    out_s[k, 1] = s1
    out_s[k, 2] = s2
    out_i[k + 1] = j
    out_j[k + 1] = i
    out_s[k + 1, 0] = -s0
    out_s[k + 1, 1] = -s1
    out_s[k + 1, 2] = -s2


@njit(cache=True, nogil=True)
def _system(rot, frame, periodic, lo, hi, cutoff, out_i, out_j, out_s, start, write):
    """Count (``write`` False) or write the edges of atoms ``lo .. hi - 1`` from ``start``."""
    n = 0
    rc2 = cutoff * cutoff
    t00 = frame[0, 0]
    t10 = frame[1, 0]
    t11 = frame[1, 1]
    t20 = frame[2, 0]
    t21 = frame[2, 1]
    t22 = frame[2, 2]
    # reciprocals: multiplications instead of divisions in the inner loops (only periodic
    # directions use them, and their heights are positive)
    u00 = 1.0 / t00 if periodic[0] else 0.0
    u11 = 1.0 / t11 if periodic[1] else 0.0
    u22 = 1.0 / t22 if periodic[2] else 0.0
    p0 = periodic[0]
    p1 = periodic[1]
    p2 = periodic[2]
    for i in range(lo, hi):
        # pairs i <= j once, each image written as (i, j, S) and (j, i, -S)
        for j in range(i, hi):
            x0 = rot[j, 0] - rot[i, 0]
            y0 = rot[j, 1] - rot[i, 1]
            z0 = rot[j, 2] - rot[i, 2]
            a2, b2 = _bounds(z0, cutoff, u22, p2)
            for s2 in range(a2, b2 + 1):
                z = z0 + s2 * t22
                rho2 = rc2 - z * z
                if rho2 <= 0.0:
                    continue
                yb = y0 + s2 * t21
                xb = x0 + s2 * t20
                a1, b1 = _bounds(yb, math.sqrt(rho2), u11, p1)
                for s1 in range(a1, b1 + 1):
                    y = yb + s1 * t11
                    sig2 = rho2 - y * y
                    if sig2 <= 0.0:
                        continue
                    a0, b0 = _bounds(xb + s1 * t10, math.sqrt(sig2), u00, p0)
                    if i == j:
                        # the sphere is symmetric: take S > 0 (lexicographically in s2, s1, s0)
                        # and write S and -S next to each other
                        for s0 in range(a0, b0 + 1):
                            if s2 < 0 or (s2 == 0 and (s1 < 0 or (s1 == 0 and s0 <= 0))):
                                continue
                            if write:
                                _write_pair(out_i, out_j, out_s, start + n, i, i, s0, s1, s2)
                            n += 2
                    elif write:
                        for s0 in range(a0, b0 + 1):
                            _write_pair(out_i, out_j, out_s, start + n, i, j, s0, s1, s2)
                            n += 2
                    elif b0 >= a0:
                        n += 2 * (b0 - a0 + 1)
    return n


@njit(cache=True, nogil=True)
def count_edges(rot, frames, periodic, offsets, systems, cutoff, counts):
    """Edges of each system in ``systems`` into ``counts`` (same order)."""
    none_i = np.zeros(0, np.int64)
    none_s = np.zeros((0, 3), np.int64)
    for k in range(len(systems)):
        b = systems[k]
        counts[k] = _system(
            rot, frames[b], periodic[b], offsets[b], offsets[b + 1], cutoff,
            none_i, none_i, none_s, 0, False,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def write_edges(rot, frames, periodic, offsets, systems, cutoff, starts, out_i, out_j, out_s):
    """Edges of each system in ``systems`` written from ``starts[k]`` on."""
    for k in range(len(systems)):
        b = systems[k]
        _system(
            rot, frames[b], periodic[b], offsets[b], offsets[b + 1], cutoff,
            out_i, out_j, out_s, starts[k], True,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def _grow(ij, shifts, n, capacity):
    """Copies of the buffers of :func:`collect_edges` with room for ``capacity`` edges."""
    bigger_ij = np.empty(2 * capacity, np.int64)
    old = len(ij) // 2
    bigger_ij[:n] = ij[:n]
    bigger_ij[capacity : capacity + n] = ij[old : old + n]
    bigger_shifts = np.empty((capacity, 3), np.int64)
    bigger_shifts[:n] = shifts[:n]
    return bigger_ij, bigger_shifts


@njit(cache=True, nogil=True)
def collect_edges(rot, frames, periodic, offsets, systems, cutoff, bounds, capacity):
    """Edges of ``systems`` in one pass, into buffers with room for ``capacity`` edges.

    ``bounds[k]`` is an upper bound on the edges of ``systems[k]``: only a system that might not
    fit is counted first, and the buffers grow when it does not. ``ij`` holds centers in
    ``[0, capacity)`` and neighbors in ``[capacity, 2 capacity)`` while writing; at the end the
    neighbors move to ``[E, 2E)``, so that ``ij[: 2E]`` is the ``(2, E)`` edge index.
    Returns ``ij``, ``shifts`` and ``E``.
    """
    capacity = max(capacity, 16)
    ij = np.empty(2 * capacity, np.int64)
    shifts = np.empty((capacity, 3), np.int64)
    none_i = np.zeros(0, np.int64)
    none_s = np.zeros((0, 3), np.int64)
    n = 0
    for k in range(len(systems)):
        b = systems[k]
        lo = offsets[b]
        hi = offsets[b + 1]
        if n + bounds[k] > capacity:
            m = _system(
                rot, frames[b], periodic[b], lo, hi, cutoff, none_i, none_i, none_s, 0, False
            )
            if n + m > capacity:
                capacity = max(2 * capacity, n + m)
                ij, shifts = _grow(ij, shifts, n, capacity)
        n += _system(
            rot, frames[b], periodic[b], lo, hi, cutoff,
            ij[:capacity], ij[capacity:], shifts, n, True,
        )  # fmt: skip
    ij[n : 2 * n] = ij[capacity : capacity + n].copy()
    return ij, shifts, n
