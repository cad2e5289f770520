"""Canonical bases of crystal lattices: a batched Niggli reduction and the lattice's automorphisms.

Rows are lattice vectors (ASE's convention). A change of basis of the same lattice is an integer
unimodular matrix ``W`` (``det W = ±1``): ``L' = W L``; fractional coordinates follow as
``f' = f W^{-1}`` so that Cartesian positions ``x = f L = f' L'`` are unchanged.

**Niggli reduction.** :func:`niggli_transform` returns, for each lattice, the integer ``T`` such
that ``T L`` is Niggli reduced. It runs the Křivý–Gruber algorithm (Acta Cryst. A32, 297, 1976)
on the Gram parameters ``A = a·a, B = b·b, C = c·c, ξ = 2 b·c, η = 2 a·c, ζ = 2 a·b``, with the
tolerant comparisons of Grosse-Kunstleve, Sauter & Adams (Acta Cryst. A60, 1, 2004), on all
lattices of a batch at once (numpy, float64, on the host). Each iteration applies to every
unfinished lattice the first step whose condition holds:

1. ``A > B`` (or ``A = B`` and ``|ξ| > |η|``): ``(a, b, c) -> (-b, -a, -c)``;
2. ``B > C`` (or ``B = C`` and ``|η| > |ζ|``): ``(a, b, c) -> (-a, -c, -b)``;
3. / 4. signs: flip basis vectors (an even number of them) so that ``ξ, η, ζ`` are all ``> 0``
   (when ``ξ η ζ > 0``) or all ``<= 0`` (otherwise);
5. ``|ξ| > B`` (or the boundary cases): ``c -> c - n b``;
6. ``|η| > A``: ``c -> c - n a``;  7. ``|ζ| > A``: ``b -> b - n a``;
8. ``ξ + η + ζ + A + B < 0`` (or its boundary case): ``c -> c + a + b``;

and stops when none applies. Steps 5–7 subtract ``n = round(ξ / 2B)`` (resp. ``η / 2A``,
``ζ / 2A``) copies at once instead of one, which reaches the same reduced form in far fewer
iterations on very skewed cells; on the boundaries (``|ξ| = B``, ...) ``n = sign(ξ)`` as in the
original. The transform is tracked as an integer matrix and the Gram matrix recomputed from it,
so no rounding accumulates. The reduced Gram matrix (lengths and angles) is unique for a lattice;
the reduced *basis* is unique only up to the lattice's automorphisms.

**Automorphisms.** :func:`lattice_automorphisms` lists the integer ``U`` with ``U G U^T = G`` of a
reduced Gram matrix ``G``: the lattice point group in that basis (``{I, -I}`` for a generic
lattice, 48 elements for a cubic P lattice). In a Niggli-reduced basis every such ``U`` has
entries in ``{-1, 0, 1}``, which bounds the search; the tests check the group orders of the 14
Bravais lattices.

**Frames.** :func:`canonical_frames` combines the two: the frames of lattice ``b`` are
``W_k = U_k T_b``, one per automorphism. Averaging a network's outputs over these frames (each
mapped back to the input basis) gives outputs that do not depend on which basis of the lattice
was given, nor on how the reduction broke ties (frame averaging, Puny et al., ICLR 2022). A
lattice within the tolerance of a reduction boundary can still reduce differently for two
equivalent inputs; no canonicalisation of lattices can be continuous everywhere (Dym et al.,
2024).
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["CanonicalFrames", "canonical_frames", "lattice_automorphisms", "niggli_transform"]

_STEP_1 = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, -1]], dtype=np.int64)
_STEP_2 = np.array([[-1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=np.int64)
_STEP_8 = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=np.int64)
#: Sign flips of an even number of basis vectors: their effect on (ξ, η, ζ) is the product of
#: the signs of (b, c), (a, c), (a, b).
_SIGNS = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.int64)
_SIGN_EFFECT = np.stack(
    [_SIGNS[:, 1] * _SIGNS[:, 2], _SIGNS[:, 0] * _SIGNS[:, 2], _SIGNS[:, 0] * _SIGNS[:, 1]], axis=1
)


def _as_lattices(lattice: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(lattice, torch.Tensor):
        lattice = lattice.detach().to("cpu", torch.float64).numpy()
    cells = np.asarray(lattice, dtype=np.float64)
    if cells.shape[-2:] != (3, 3):
        raise ValueError(f"lattices must have shape (..., 3, 3), got {cells.shape}")
    return cells.reshape(-1, 3, 3)


def _gram_parameters(gram: np.ndarray) -> tuple[np.ndarray, ...]:
    """``A, B, C, ξ, η, ζ`` of Gram matrices ``(n, 3, 3)``."""
    return (
        gram[:, 0, 0],
        gram[:, 1, 1],
        gram[:, 2, 2],
        2.0 * gram[:, 1, 2],
        2.0 * gram[:, 0, 2],
        2.0 * gram[:, 0, 1],
    )


def _shift(row: int, col: int, n: np.ndarray) -> np.ndarray:
    """Matrices ``(len(n), 3, 3)``: identity with ``-n`` at ``(row, col)`` (``v_row -= n v_col``)."""
    out = np.broadcast_to(np.eye(3, dtype=np.int64), (len(n), 3, 3)).copy()
    out[:, row, col] = -n
    return out


def _reduction_step(gram: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Křivý–Gruber step for each Gram matrix: ``(P (n, 3, 3), applied (n,))``, ``P`` the
    integer matrix to left-multiply onto the basis (identity where no step applies)."""
    a, b, c, xi, eta, zeta = _gram_parameters(gram)
    n = len(a)
    step = np.full(n, 0, dtype=np.int64)  # 0: reduced

    def pick(code: int, cond: np.ndarray) -> None:
        step[(step == 0) & cond] = code

    pick(1, (a > b + eps) | ((np.abs(a - b) <= eps) & (np.abs(xi) > np.abs(eta) + eps)))
    pick(2, (b > c + eps) | ((np.abs(b - c) <= eps) & (np.abs(eta) > np.abs(zeta) + eps)))

    # Steps 3 / 4: the first even sign flip that makes (ξ, η, ζ) all > 0 or all <= 0.
    trio = np.stack([xi, eta, zeta], axis=1)
    sign = np.where(trio > eps[:, None], 1, np.where(trio < -eps[:, None], -1, 0))
    positive = np.all(sign != 0, axis=1) & (np.prod(sign, axis=1) > 0)
    flipped = sign[:, None, :] * _SIGN_EFFECT[None]  # (n, 4, 3)
    valid = np.where(positive[:, None], np.all(flipped > 0, axis=2), np.all(flipped <= 0, axis=2))
    choice = np.argmax(valid, axis=1)
    pick(3, choice != 0)

    pick(
        5,
        (np.abs(xi) > b + eps)
        | ((np.abs(xi - b) <= eps) & (2 * eta < zeta - eps))
        | ((np.abs(xi + b) <= eps) & (zeta < -eps)),
    )
    pick(
        6,
        (np.abs(eta) > a + eps)
        | ((np.abs(eta - a) <= eps) & (2 * xi < zeta - eps))
        | ((np.abs(eta + a) <= eps) & (zeta < -eps)),
    )
    pick(
        7,
        (np.abs(zeta) > a + eps)
        | ((np.abs(zeta - a) <= eps) & (2 * xi < eta - eps))
        | ((np.abs(zeta + a) <= eps) & (eta < -eps)),
    )
    total = xi + eta + zeta + a + b
    pick(8, (total < -eps) | ((np.abs(total) <= eps) & (2 * (a + eta) + zeta > eps)))

    def multiple(x: np.ndarray, norm: np.ndarray, tol: np.ndarray) -> np.ndarray:
        # Whole multiples past the bound, one step on the boundary; never zero.
        jump = np.rint(x / (2.0 * norm)).astype(np.int64)
        return np.where(np.abs(x) > norm + tol, jump, np.sign(x).astype(np.int64))

    out = np.broadcast_to(np.eye(3, dtype=np.int64), (n, 3, 3)).copy()
    out[step == 1] = _STEP_1
    out[step == 2] = _STEP_2
    out[step == 3] = np.einsum("ni,ij->nij", _SIGNS[choice[step == 3]], np.eye(3, dtype=np.int64))
    for code, row, col, x, norm in ((5, 2, 1, xi, b), (6, 2, 0, eta, a), (7, 1, 0, zeta, a)):
        sel = step == code
        if sel.any():
            out[sel] = _shift(row, col, multiple(x[sel], norm[sel], eps[sel]))
    out[step == 8] = _STEP_8
    return out, step != 0


def niggli_transform(
    lattice: np.ndarray | torch.Tensor, *, rel_tol: float = 1e-5, max_iter: int = 1000
) -> np.ndarray:
    """Integer matrices ``T (n, 3, 3)`` with ``T @ lattice`` Niggli reduced (see module docs).

    Args:
        lattice: ``(..., 3, 3)`` lattice vectors as rows (Å), numpy or torch (read on the host).
        rel_tol: tolerance of the comparisons, relative to ``V^(2/3)`` (Gram units, Å²).
        max_iter: iteration cap; a lattice still changing after it (a numerically singular cell)
            keeps its partly reduced basis, which is still a basis of the same lattice.

    Returns:
        ``(n, 3, 3)`` int64 unimodular matrices, ``n`` the number of lattices.
    """
    cells = _as_lattices(lattice)
    gram0 = cells @ cells.transpose(0, 2, 1)
    eps = rel_tol * np.abs(np.linalg.det(cells)) ** (2.0 / 3.0)
    transform = np.broadcast_to(np.eye(3, dtype=np.int64), cells.shape).copy()
    active = np.arange(len(cells))
    for _ in range(max_iter):
        if active.size == 0:
            break
        t = transform[active].astype(np.float64)
        gram = t @ gram0[active] @ t.transpose(0, 2, 1)
        step, applied = _reduction_step(gram, eps[active])
        transform[active] = step @ transform[active]
        active = active[applied]
    return transform


@cache
def _short_vectors() -> np.ndarray:
    """The 26 nonzero integer vectors with entries in {-1, 0, 1}, ``(26, 3)``."""
    vectors = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.int64)
    return vectors[np.any(vectors != 0, axis=1)]


@cache
def _sign_diagonals() -> np.ndarray:
    """The 8 matrices ``diag(±1, ±1, ±1)``, identity first, then ``-I`` last."""
    signs = np.array(list(itertools.product((1, -1), repeat=3)), dtype=np.int64)
    return np.einsum("ki,ij->kij", signs, np.eye(3, dtype=np.int64))


def _automorphisms_one(gram: np.ndarray, tol: float, norms: np.ndarray) -> np.ndarray:
    vectors = _short_vectors()
    rows = [vectors[np.abs(norms - gram[i, i]) <= tol] for i in range(3)]
    grid = np.stack(
        np.meshgrid(*(np.arange(len(r)) for r in rows), indexing="ij"), axis=-1
    ).reshape(-1, 3)
    cand = np.stack([rows[i][grid[:, i]] for i in range(3)], axis=1)  # (k, 3, 3)
    cf = cand.astype(np.float64)
    keep = np.all(np.abs(cf @ gram @ cf.transpose(0, 2, 1) - gram) <= tol, axis=(1, 2))
    keep &= np.abs(np.rint(np.linalg.det(cf))) == 1
    return cand[keep]


def lattice_automorphisms(
    lattice: np.ndarray | torch.Tensor, *, rel_tol: float = 1e-6
) -> list[np.ndarray]:
    """Integer ``U`` with ``U G U^T = G`` (``G = L L^T``) for Niggli-reduced lattices ``L``.

    Args:
        lattice: ``(..., 3, 3)`` Niggli-reduced lattices (rows, Å).
        rel_tol: tolerance on ``U G U^T - G`` relative to the mean squared basis length.

    Returns:
        One ``(k_b, 3, 3)`` int64 array per lattice: its point group in this basis, always
        containing ``I`` and ``-I``.
    """
    cells = _as_lattices(lattice)
    gram = cells @ cells.transpose(0, 2, 1)
    tol = rel_tol * np.trace(gram, axis1=1, axis2=2) / 3.0
    vectors = _short_vectors().astype(np.float64)
    norms = np.einsum("vi,nij,vj->nv", vectors, gram, vectors)  # (n, 26)
    # Generic case: only ±e_i have the length of basis vector i; U is then a sign diagonal.
    diag = np.diagonal(gram, axis1=1, axis2=2)
    matches = np.abs(norms[:, None, :] - diag[:, :, None]) <= tol[:, None, None]  # (n, 3, 26)
    generic = np.all(matches.sum(axis=2) == 2, axis=1)
    signs = _sign_diagonals()
    sf = signs.astype(np.float64)
    diag_ok = np.all(
        np.abs(np.einsum("kij,njl,kml->nkim", sf, gram, sf) - gram[:, None])
        <= tol[:, None, None, None],
        axis=(2, 3),
    )  # (n, 8)
    out = []
    for b in range(len(cells)):
        if generic[b]:
            out.append(signs[diag_ok[b]])
        else:
            out.append(_automorphisms_one(gram[b], tol[b], norms[b]))
    return out


class CanonicalFrames(NamedTuple):
    """Frames ``L_k = transform[k] @ L[system[k]]`` of a batch of lattices.

    Attributes:
        transform: ``(F, 3, 3)`` int64 ``W_k = U_k T``.
        inverse: ``(F, 3, 3)`` int64 ``W_k^{-1}``.
        system: ``(F,)`` int64 lattice index of each frame, ascending.
    """

    transform: np.ndarray
    inverse: np.ndarray
    system: np.ndarray


def canonical_frames(
    lattice: np.ndarray | torch.Tensor, *, rel_tol: float = 1e-5, sym_tol: float = 1e-6
) -> CanonicalFrames:
    """The Niggli-reduced bases of each lattice, one per automorphism of the reduced lattice.

    Args:
        lattice: ``(B, 3, 3)`` lattice vectors as rows (Å).
        rel_tol: tolerance of the reduction (:func:`niggli_transform`).
        sym_tol: tolerance of the automorphisms (:func:`lattice_automorphisms`).

    Returns:
        :class:`CanonicalFrames`; ``F = Σ_b |Aut(L_b)|``, which is ``2 B`` for generic lattices.
    """
    cells = _as_lattices(lattice)
    reduce = niggli_transform(cells, rel_tol=rel_tol)
    groups = lattice_automorphisms(reduce.astype(np.float64) @ cells, rel_tol=sym_tol)
    system = np.repeat(np.arange(len(cells)), [len(g) for g in groups])
    transform = np.concatenate(groups, axis=0) @ reduce[system]
    inverse = np.rint(np.linalg.inv(transform.astype(np.float64))).astype(np.int64)
    return CanonicalFrames(transform=transform, inverse=inverse, system=system)
