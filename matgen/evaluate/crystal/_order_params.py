"""Compiled local structure order parameters: the values of pymatgen's ``LocalStructOrderParams``
for the order-parameter types that matminer's ``CrystalNNFingerprint`` ``ops`` preset uses.

pymatgen evaluates each order parameter in a Python triple loop over neighbours (about 1 ms a
call, two thirds of the CrystalNN fingerprint's time). This kernel evaluates the same
definitions (Zimmermann & Jain, RSC Adv. 10, 6063, 2020; Steinhardt et al., PRB 28, 784, 1983)
with the same operations, conventions and thresholds, for all order parameters of one
coordination shell in one call; ``tests/evaluate/test_order_params.py`` holds it to pymatgen's
values on every site of MP-20 crystals, perturbed crystals and generated samples.

Semantics kept from pymatgen, one order parameter per ``LocalStructOrderParams`` object (as
matminer builds them):

* For neighbour ``j`` at the north pole and ``k`` on the prime meridian, ``theta_k`` is the
  j-i-k angle; for every third neighbour ``m``, ``theta_m`` is the j-i-m angle and ``phi`` the
  angle between the projections of ``m`` and ``k`` on the plane normal to ``j``. A pair ``(j, k)``
  whose ``k`` lies along ``j`` (projection norm below 1e-12) skips all its ``m`` terms; a third
  neighbour along ``j`` skips the angular terms but still adds a south-pole term.
* "max" order parameters are the largest ``(j, k)`` ratio of accumulated value to accumulated
  weight (0 where the weight is 0); "bent" is the ratio of the totals; "bcc" sums over ``j < k``
  and divides by ``N (6 + (N - 2)(N - 3)) / 2``. An order parameter pymatgen returns as None
  (too few neighbours) is NaN here.
* ``q_l`` (Steinhardt) is computed through the spherical-harmonic addition theorem,
  ``q_l^2 = sum_jk P_l(u_j . u_k) / N^2``, equal to pymatgen's sum over ``Y_lm`` up to rounding.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["KINDS", "N_PARAMS", "order_parameters", "pack_parameters"]

# Order-parameter kinds. The numbers index the kernel's branches.
KINDS = {
    "sgl_bd": 0,
    "bent": 1,
    "tri_plan_max": 2,
    "tet_max": 3,
    "T": 4,
    "tri_pyr": 5,
    "sq_pyr": 6,
    "pent_pyr": 7,
    "hex_pyr": 8,
    "sq_plan_max": 9,
    "see_saw_rect": 10,
    "tri_bipyr": 11,
    "oct_max": 12,
    "hex_plan_max": 13,
    "pent_bipyr": 14,
    "hex_bipyr": 15,
    "pent_plan_max": 16,
    "bcc": 17,
    "cuboct_max": 18,
    "q2": 19,
    "q4": 20,
    "q6": 21,
}
# Parameter columns; pymatgen's cuboctahedral parameters are keyed 2, 4, 5 and 6.
_COLUMNS = (
    "TA",
    "IGW_TA",
    "IGW_EP",
    "fac_AA",
    "exp_cos_AA",
    "min_SPP",
    "IGW_SPP",
    "w_SPP",
    2,
    4,
    5,
    6,
)
N_PARAMS = len(_COLUMNS)
(_TA, _IGW_TA, _IGW_EP, _FAC_AA, _EXP_AA, _MIN_SPP, _IGW_SPP, _W_SPP, _P2, _P4, _P5, _P6) = range(
    N_PARAMS
)


def pack_parameters(kind: str, params: dict | None) -> np.ndarray:
    """One row of the kernel's parameter table (NaN where a parameter is absent)."""
    if kind not in KINDS:
        raise ValueError(f"order parameter type {kind!r} is not supported by the compiled kernel")
    row = np.full(N_PARAMS, np.nan)
    for i, key in enumerate(_COLUMNS):
        if params is not None and key in params:
            row[i] = float(params[key])
    return row


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma``; software-emulated without FMA units)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        fn = builder.module.declare_intrinsic(
            "llvm.fma", [double], ir.FunctionType(double, [double, double, double])
        )
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True)
def _fused_dots(a, b):
    out = np.empty(len(a))
    for k in range(len(a)):
        out[k] = _fma(a[k, 2], b[k, 2], _fma(a[k, 1], b[k, 1], a[k, 0] * b[k, 0]))
    return out


def _numpy_dot_is_fused() -> bool:
    """Whether NumPy rounds a 3-vector dot product with two fused multiply-adds (the BLAS
    ``ddot`` of some x86-64 builds and CPUs) rather than as a plain left-to-right sum (others):
    probed on fixed random vectors, where the two roundings differ for about a third."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 256, 3))
    numpy_dots = np.array([np.dot(x, y) for x, y in zip(a, b, strict=True)])
    return bool(np.array_equal(numpy_dots, _fused_dots(a, b)))


#: Frozen into the kernels when they compile (numba reads module globals as constants).
_FUSED_DOT = _numpy_dot_is_fused()


@njit(cache=True, inline="always")
def _dot(a0, a1, a2, b0, b1, b2):
    """A 3-vector dot product rounded as NumPy's ``inner``/``dot`` round it on this machine
    (:func:`_numpy_dot_is_fused`), so that angles at exact ties (90 degrees, collinear bonds)
    resolve as in pymatgen."""
    if _FUSED_DOT:
        return _fma(a2, b2, _fma(a1, b1, a0 * b0))
    return a0 * b0 + a1 * b1 + a2 * b2


@njit(cache=True, inline="always")
def _clip(x):
    return max(-1.0, min(x, 1.0))


@njit(cache=True, inline="always")
def _gauss(x):
    return math.exp(-0.5 * x * x)


@njit(cache=True)
def _geometry(vectors):
    """Unit vectors, distances, j-i-k angles and the normalised projections of ``k`` on the
    plane normal to ``j`` (``ok[j, k]`` False where that projection vanishes)."""
    n = vectors.shape[0]
    dist = np.empty(n)
    unit = np.empty((n, 3))
    for j in range(n):
        v = vectors[j]
        d = math.sqrt(_dot(v[0], v[1], v[2], v[0], v[1], v[2]))
        dist[j] = d
        for c in range(3):
            unit[j, c] = vectors[j, c] / d
    theta = np.zeros((n, n))
    proj = np.zeros((n, n, 3))
    ok = np.zeros((n, n), dtype=np.bool_)
    for j in range(n):
        u = unit[j]
        uu = _dot(u[0], u[1], u[2], u[0], u[1], u[2])
        for k in range(n):
            if k == j:
                continue
            dot = _dot(unit[k, 0], unit[k, 1], unit[k, 2], u[0], u[1], u[2])
            theta[j, k] = math.acos(_clip(dot))
            f = dot / uu
            x0 = unit[k, 0] - f * unit[j, 0]
            x1 = unit[k, 1] - f * unit[j, 1]
            x2 = unit[k, 2] - f * unit[j, 2]
            norm = math.sqrt(_dot(x0, x1, x2, x0, x1, x2))
            if norm >= 1e-12:
                ok[j, k] = True
                proj[j, k, 0] = x0 / norm
                proj[j, k, 1] = x1 / norm
                proj[j, k, 2] = x2 / norm
    return unit, dist, theta, proj, ok


@njit(cache=True)
def _legendre(ell, x):
    x2 = x * x
    if ell == 2:
        return 0.5 * (3.0 * x2 - 1.0)
    if ell == 4:
        return (35.0 * x2 * x2 - 30.0 * x2 + 3.0) / 8.0
    return (231.0 * x2 * x2 * x2 - 315.0 * x2 * x2 + 105.0 * x2 - 5.0) / 16.0


@njit(cache=True)
def _steinhardt(unit, ell):
    n = unit.shape[0]
    acc = 0.0
    for j in range(n):
        for k in range(n):
            dot = _dot(unit[j, 0], unit[j, 1], unit[j, 2], unit[k, 0], unit[k, 1], unit[k, 2])
            acc += _legendre(ell, _clip(dot))
    return math.sqrt(max(acc, 0.0)) / n


@njit(cache=True)
def _south_pole_kind(kind):
    # see_saw_rect, sq_plan_max, tri_bipyr, oct_max, hex_plan_max, pent_bipyr, hex_bipyr
    return (
        kind == 9
        or kind == 10
        or kind == 11
        or kind == 12
        or kind == 13
        or kind == 14
        or (kind == 15)
    )


@njit(cache=True)
def _peters(kind, p, theta, proj, ok):
    """One motif order parameter (kinds 1-18) of a neighbour shell; NaN for pymatgen's None."""
    n = theta.shape[0]
    ipi = 1.0 / math.pi
    piover2 = math.pi / 2.0
    fac_bcc = 1.0 / math.exp(-0.5)
    asin13 = math.asin(1.0 / 3.0)
    total_q = 0.0
    total_w = 0.0
    best = -np.inf
    south = _south_pole_kind(kind)
    for j in range(n):
        row_q = 0.0
        row_w = 0.0
        for k in range(n):
            if k == j:
                continue
            q = 0.0
            w = 0.0
            tk = theta[j, k]
            if kind == 1:
                q += _gauss(p[_IGW_TA] * (tk * ipi - p[_TA]))
                w += 1.0
            elif kind == 2 or kind == 3:
                q += _gauss(p[_IGW_TA] * (tk * ipi - p[_TA]))
                w += 1.0
            elif kind >= 4 and kind <= 8:
                q += _gauss(p[_IGW_EP] * (tk * ipi - 0.5))
                w += 1.0
            elif kind == 18:
                if tk >= p[_MIN_SPP]:
                    q += p[_W_SPP] * _gauss(p[_IGW_SPP] * (tk * ipi - 1.0))
                    w += p[_W_SPP]
            elif south:
                if tk < p[_MIN_SPP]:
                    if kind == 13:
                        t = p[_IGW_TA] * (math.fabs(tk * ipi - 0.5) - p[_TA])
                    else:
                        t = p[_IGW_EP] * (tk * ipi - 0.5)
                    q += _gauss(t)
                    w += 1.0
            elif kind == 16:
                target = 0.4 if tk <= p[_TA] * math.pi else 0.8
                q += _gauss(p[_IGW_TA] * (tk * ipi - target))
                w += 1.0
            elif kind == 17 and j < k:
                if tk >= p[_MIN_SPP]:
                    q += p[_W_SPP] * _gauss(p[_IGW_SPP] * (tk * ipi - 1.0))
                    w += p[_W_SPP]
            if ok[j, k] and kind != 1 and (kind != 17 or j < k):
                for m in range(n):
                    if m == j or m == k:
                        continue
                    tm = theta[j, m]
                    if south and tm >= p[_MIN_SPP]:
                        q += _gauss(p[_IGW_SPP] * (tm * ipi - 1.0))
                        w += 1.0
                    if not ok[j, m]:
                        continue
                    dot = _dot(
                        proj[j, m, 0],
                        proj[j, m, 1],
                        proj[j, m, 2],
                        proj[j, k, 0],
                        proj[j, k, 1],
                        proj[j, k, 2],
                    )
                    phi = math.acos(_clip(dot))
                    if kind == 2 or kind == 3:
                        c = math.cos(p[_FAC_AA] * phi) ** p[_EXP_AA]
                        q += _gauss(p[_IGW_TA] * (tm * ipi - p[_TA])) * c
                        w += 1.0
                    elif kind == 16:
                        target = 0.4 if tm <= p[_TA] * math.pi else 0.8
                        c = math.cos(phi)
                        q += _gauss(p[_IGW_TA] * (tm * ipi - target)) * c * c
                        w += 1.0
                    elif kind >= 4 and kind <= 8:
                        c = math.cos(p[_FAC_AA] * phi) ** p[_EXP_AA]
                        q += c * _gauss(p[_IGW_EP] * (tm * ipi - 0.5))
                        w += 1.0
                    elif kind == 10:
                        if tm < p[_MIN_SPP] and tk < p[_MIN_SPP] and phi < 0.75 * math.pi:
                            c = math.cos(p[_FAC_AA] * phi) ** p[_EXP_AA]
                            q += c * _gauss(p[_IGW_EP] * (tm * ipi - 0.5))
                            w += 1.0
                    elif south:
                        if tm < p[_MIN_SPP] and tk < p[_MIN_SPP]:
                            c = math.cos(p[_FAC_AA] * phi) ** p[_EXP_AA]
                            if kind == 13:
                                t = p[_IGW_TA] * (math.fabs(tm * ipi - 0.5) - p[_TA])
                            else:
                                t = p[_IGW_EP] * (tm * ipi - 0.5)
                            q += c * _gauss(t)
                            w += 1.0
                    elif kind == 17:
                        if tk < p[_MIN_SPP]:
                            fac = 1.0 if tk > piover2 else -1.0
                            t = (tm - piover2) / asin13
                            q += fac * math.cos(3.0 * phi) * fac_bcc * t * _gauss(t)
                            w += 1.0
                    elif kind == 18:
                        if tm < p[_MIN_SPP] and p[_P4] < tk < p[_P2]:
                            if p[_P4] < tm < p[_P2]:
                                c = math.cos(phi)
                                q += c * c * _gauss(p[_P5] * (tm * ipi - 0.5))
                                w += 1.0
                            elif tm < p[_P4]:
                                t = 0.0556 * (math.cos(phi - 0.5 * math.pi) - 0.81649658)
                                q += _gauss(t) * _gauss(p[_P6] * (tm * ipi - 1.0 / 3.0))
                                w += 1.0
                            elif tm > p[_P2]:
                                t = 0.0556 * (math.cos(phi - 0.5 * math.pi) - 0.81649658)
                                q += _gauss(t) * _gauss(p[_P6] * (tm * ipi - 2.0 / 3.0))
                                w += 1.0
            row_q += q
            row_w += w
            ratio = q / w if w > 1e-12 else 0.0
            best = max(best, ratio)
        total_q += row_q
        total_w += row_w
    if kind == 1:
        return total_q / total_w if total_w > 1e-12 else np.nan
    if kind == 17:
        if n <= 3:
            return np.nan
        return total_q / (0.5 * n * (6.0 + (n - 2.0) * (n - 3.0)))
    return best if n > 1 else np.nan


@njit(cache=True)
def order_parameters(vectors, kinds, params):
    """Order parameters of one neighbour shell.

    Args:
        vectors: ``(N, 3)`` float64 vectors from the central atom to its ``N`` neighbours.
        kinds: ``(K,)`` int64 order-parameter kinds (:data:`KINDS`).
        params: ``(K, N_PARAMS)`` float64 rows from :func:`pack_parameters`.

    Returns:
        ``(K,)`` values; NaN where pymatgen returns None.
    """
    n = vectors.shape[0]
    out = np.full(kinds.shape[0], np.nan)
    if n == 0:
        return out
    unit, dist, theta, proj, ok = _geometry(vectors)
    for i in range(kinds.shape[0]):
        kind = kinds[i]
        if kind == 0:
            if n == 1:
                out[i] = 1.0
            else:
                d = np.sort(dist)
                out[i] = 1.0 - d[0] / d[1]
        elif kind == 19:
            out[i] = _steinhardt(unit, 2)
        elif kind == 20:
            out[i] = _steinhardt(unit, 4)
        elif kind == 21:
            out[i] = _steinhardt(unit, 6)
        else:
            out[i] = _peters(kind, params[i], theta, proj, ok)
    return out
