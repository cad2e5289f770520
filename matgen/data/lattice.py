"""Lattice utilities in one convention: ASE's rows (``cell[..., i, :]`` is lattice vector i).

Cartesian positions are ``x = f @ cell`` for fractional coordinates ``f``. Lattice parameters are
lengths ``(a, b, c)`` in Å and angles ``(alpha, beta, gamma)`` in degrees, alpha between b and c.
The matrix built from parameters puts ``a`` along x and ``b`` in the xy plane (ASE's
``cellpar_to_cell``). Every function is batched over leading dimensions, differentiable for torch
input, and returns numpy for numpy input.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "cart_to_frac",
    "frac_to_cart",
    "lattice_params_to_matrix",
    "matrix_to_lattice_params",
    "niggli_reduce",
    "wrap_frac",
]

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float64))


def _like(result: torch.Tensor, template: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return result if isinstance(template, torch.Tensor) else result.detach().numpy()


def lattice_params_to_matrix(lengths: Array, angles: Array) -> Array:
    """Cell matrix ``(..., 3, 3)`` from lengths ``(..., 3)`` (Å) and angles ``(..., 3)`` (degrees).

    With ``cos`` of alpha, beta, gamma written ``ca, cb, cg``:
    ``a1 = a (1, 0, 0)``, ``a2 = b (cg, sg, 0)``,
    ``a3 = c (cb, (ca - cb cg) / sg, sqrt(1 - cb^2 - ((ca - cb cg) / sg)^2))``.
    """
    length, angle = _tensor(lengths), _tensor(angles)
    rad = torch.deg2rad(angle)
    ca, cb, cg = torch.cos(rad).unbind(-1)
    sg = torch.sin(rad[..., 2])
    cy = (ca - cb * cg) / sg
    cz = torch.sqrt(torch.clamp(1.0 - cb**2 - cy**2, min=0.0))
    zero, one = torch.zeros_like(ca), torch.ones_like(ca)
    unit = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([cg, sg, zero], -1),
            torch.stack([cb, cy, cz], -1),
        ],
        dim=-2,
    )
    return _like(unit * length.unsqueeze(-1), lengths)


def matrix_to_lattice_params(cell: Array) -> tuple[Array, Array]:
    """Lengths ``(..., 3)`` in Å and angles ``(..., 3)`` in degrees of cells ``(..., 3, 3)``."""
    m = _tensor(cell)
    length = torch.linalg.norm(m, dim=-1)
    a1, a2, a3 = m.unbind(-2)
    la, lb, lc = length.unbind(-1)

    def angle(u: torch.Tensor, v: torch.Tensor, lu: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        return torch.rad2deg(torch.arccos(torch.clamp((u * v).sum(-1) / (lu * lv), -1.0, 1.0)))

    angles = torch.stack([angle(a2, a3, lb, lc), angle(a1, a3, la, lc), angle(a1, a2, la, lb)], -1)
    return _like(length, cell), _like(angles, cell)


def frac_to_cart(frac: Array, cell: Array) -> Array:
    """Cartesian positions ``(..., n, 3)`` from fractional ``(..., n, 3)`` and cells ``(..., 3, 3)``."""
    return _like(_tensor(frac) @ _tensor(cell), frac)


def cart_to_frac(positions: Array, cell: Array) -> Array:
    """Fractional coordinates ``(..., n, 3)``: solves ``f @ cell = x`` (no explicit inverse)."""
    x, m = _tensor(positions), _tensor(cell)
    frac = torch.linalg.solve(m.transpose(-1, -2), x.transpose(-1, -2)).transpose(-1, -2)
    return _like(frac, positions)


def wrap_frac(frac: Array) -> Array:
    """Fractional coordinates wrapped into [0, 1): ``f - floor(f)``, with values that round to
    exactly 1.0 in floating point mapped to 0.0."""
    f = _tensor(frac)
    wrapped = f - torch.floor(f)
    wrapped = torch.where(wrapped >= 1.0, wrapped - 1.0, wrapped)
    return _like(wrapped, frac)


def niggli_reduce(
    cell: np.ndarray, positions: np.ndarray | None = None, *, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray | None]:
    """Niggli-reduce one cell (Křivý–Gruber, via pymatgen, orientation kept) and re-wrap
    positions into it.

    Args:
        cell: ``(3, 3)`` lattice vectors as rows, Å.
        positions: ``(n, 3)`` Cartesian positions, Å, or None.
        eps: relative tolerance of the reduction.

    Returns:
        The reduced cell (an integer unimodular combination of the input rows, describing the same
        lattice) and the positions moved by lattice vectors so that their fractional coordinates
        in the reduced cell lie in [0, 1).
    """
    from pymatgen.core import Lattice

    reduced = Lattice(np.asarray(cell, dtype=np.float64)).get_niggli_reduced_lattice(tol=eps).matrix
    reduced = np.asarray(reduced, dtype=np.float64)
    if positions is None:
        return reduced, None
    frac = wrap_frac(cart_to_frac(np.asarray(positions, dtype=np.float64), reduced))
    return reduced, frac @ reduced
