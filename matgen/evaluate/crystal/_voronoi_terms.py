"""Compiled, bit-identical stand-ins for the two geometry helpers of pymatgen's ``VoronoiNN``.

CrystalNN weighs each neighbour by the solid angle of its Voronoi facet. pymatgen computes every
facet's solid angle (``solid_angle``) and its pyramid volume (``vol_tetra``) with NumPy calls on
3-vectors, where ``np.cross`` alone costs ~40 us: after the order parameters
(:mod:`matgen.evaluate.crystal._order_params`), these two helpers were 40% of a CrystalNN
fingerprint's time. The functions below give the same floating-point results bit for bit: the
same operations in the same order, dot products and norms rounded as NumPy rounds them on this
machine (two fused multiply-adds or a plain sum, depending on its BLAS and CPU: probed at import,
:func:`matgen.evaluate.crystal._order_params._numpy_dot_is_fused`), cross products as ``np.cross`` (two products, one subtraction), and
the arctangent from NumPy's own ``np.arctan`` (its SIMD arctangent can differ from the C
library's in the last bit). ``tests/evaluate/test_order_params.py`` checks the equality on
random facets and on whole fingerprints.

:func:`compiled_voronoi_helpers` swaps them into ``pymatgen.core.local_env`` for the duration of a
``with`` block (reference-counted under a lock, so nested and concurrent blocks restore the
originals exactly once, when the last one leaves).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numba import njit

from matgen.evaluate.crystal._order_params import _dot

__all__ = ["compiled_voronoi_helpers", "solid_angle", "vol_tetra"]


@njit(cache=True, inline="always")
def _cross(a0, a1, a2, b0, b1, b2):
    return a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0


@njit(cache=True)
def _solid_angle_terms(center, coords):
    """Numerators ``|d0 . (di x dj)|`` and denominators of the facet's triangle fan."""
    n = coords.shape[0]
    disp = np.empty((n, 3))
    norm = np.empty(n)
    for i in range(n):
        for c in range(3):
            disp[i, c] = coords[i, c] - center[c]
        norm[i] = math.sqrt(
            _dot(disp[i, 0], disp[i, 1], disp[i, 2], disp[i, 0], disp[i, 1], disp[i, 2])
        )
    m = max(n - 2, 0)
    tp = np.empty(m)
    de = np.empty(m)
    d0 = disp[0]
    for ii in range(1, n - 1):
        jj = ii + 1
        di = disp[ii]
        dj = disp[jj]
        c0, c1, c2 = _cross(di[0], di[1], di[2], dj[0], dj[1], dj[2])
        tp[ii - 1] = abs(_dot(d0[0], d0[1], d0[2], c0, c1, c2))
        de[ii - 1] = (
            norm[0] * norm[ii] * norm[jj]
            + norm[jj] * _dot(d0[0], d0[1], d0[2], di[0], di[1], di[2])
            + norm[ii] * _dot(d0[0], d0[1], d0[2], dj[0], dj[1], dj[2])
            + norm[0] * _dot(di[0], di[1], di[2], dj[0], dj[1], dj[2])
        )
    return tp, de


@njit(cache=True)
def _sum_angles(tp, de, arctan):
    angle = 0.0
    for i in range(tp.shape[0]):
        if de[i] == 0:
            a = 0.5 * math.pi if tp[i] > 0 else -0.5 * math.pi
        else:
            a = arctan[i]
        angle += (a if a > 0 else a + math.pi) * 2
    return angle


def solid_angle(center, coords) -> float:
    """Solid angle of the polygon ``coords`` (its vertices in order) seen from ``center``:
    ``pymatgen.core.local_env.solid_angle``, bit for bit."""
    points = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    tp, de = _solid_angle_terms(np.asarray(center, dtype=np.float64), points)
    with np.errstate(divide="ignore", invalid="ignore"):
        arctan = np.arctan(tp / de)
    return _sum_angles(tp, de, arctan)


@njit(cache=True)
def _vol_tetra(vt1, vt2, vt3, vt4):
    a0, a1, a2 = vt1[0] - vt4[0], vt1[1] - vt4[1], vt1[2] - vt4[2]
    b0, b1, b2 = vt2[0] - vt4[0], vt2[1] - vt4[1], vt2[2] - vt4[2]
    c0, c1, c2 = vt3[0] - vt4[0], vt3[1] - vt4[1], vt3[2] - vt4[2]
    x0, x1, x2 = _cross(b0, b1, b2, c0, c1, c2)
    return abs(_dot(a0, a1, a2, x0, x1, x2)) / 6


def vol_tetra(vt1, vt2, vt3, vt4) -> float:
    """Volume of the tetrahedron ``vt1..vt4``: ``pymatgen.core.local_env.vol_tetra``, bit for
    bit."""
    return _vol_tetra(
        np.asarray(vt1, dtype=np.float64),
        np.asarray(vt2, dtype=np.float64),
        np.asarray(vt3, dtype=np.float64),
        np.asarray(vt4, dtype=np.float64),
    )


_LOCK = threading.Lock()
_state: dict = {"depth": 0, "saved": None}


@contextmanager
def compiled_voronoi_helpers() -> Iterator[None]:
    """Use :func:`solid_angle` and :func:`vol_tetra` inside pymatgen's ``VoronoiNN`` (and so
    CrystalNN) within this block; the originals are back when the outermost block leaves."""
    from pymatgen.core import local_env

    with _LOCK:
        if _state["depth"] == 0:
            _state["saved"] = (local_env.solid_angle, local_env.vol_tetra)
            local_env.solid_angle = solid_angle
            local_env.vol_tetra = vol_tetra
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                local_env.solid_angle, local_env.vol_tetra = _state["saved"]
                _state["saved"] = None
