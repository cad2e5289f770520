"""Stable candidate ids: a hash of the reduced (primitive) structure.

The id of a crystal is ``FORMULA-HASH``: its reduced formula and the first 16 hex digits of the
sha256 of a canonical text form, built as follows.

1. Primitive cell: spglib's standardized primitive cell (``symprec`` = 0.01 Å, positions
   idealised onto their Wyckoff sites); the Niggli-reduced cell when spglib finds none.
2. Lattice: the six parameters ``a, b, c`` (Å, rounded to 1e-3) and ``α, β, γ`` (degrees,
   rounded to 1e-2), which do not depend on the orientation.
3. Origin: each atom of the rarest species (lowest atomic number on ties) is tried as the origin;
   the lexicographically smallest sorted list of ``(Z, x, y, z)`` (fractional, wrapped into
   [0, 1), rounded to 1e-4) is kept, so a rigid translation does not change the id.

The same input always gives the same id, on any machine; equivalent settings of one crystal
usually do too. That a candidate repeats another is decided by ``StructureMatcher``
(:mod:`matgen.screen.dedup`), never by the id alone.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["structure_id", "unreadable_id"]

SYMPREC = 0.01
_DECIMALS_FRAC = 4


def structure_id(structure: Structure) -> str:
    """``FORMULA-HASH``: the reduced formula and a hash of the canonical primitive cell."""
    lattice, frac, numbers = _primitive(structure)
    a, b, c = np.linalg.norm(lattice, axis=1)
    alpha, beta, gamma = (
        _angle(lattice[1], lattice[2]),
        _angle(lattice[0], lattice[2]),
        _angle(lattice[0], lattice[1]),
    )
    params = [f"{x:.3f}" for x in (a, b, c)] + [f"{x:.2f}" for x in (alpha, beta, gamma)]
    sites = _canonical_sites(frac, numbers)
    text = " ".join(params) + "|" + ";".join(f"{z} {x} {y} {w}" for z, x, y, w in sites)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{structure.composition.reduced_formula}-{digest}"


def unreadable_id(source: str) -> str:
    """The id of an input item that could not be read: a hash of where it came from."""
    return "unreadable-" + hashlib.sha256(source.encode()).hexdigest()[:16]


def _primitive(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import spglib

    cell = (
        structure.lattice.matrix,
        structure.frac_coords,
        np.asarray(structure.atomic_numbers, dtype=int),
    )
    try:
        with warnings.catch_warnings():  # spglib >= 2.5 warns about its error handling
            warnings.simplefilter("ignore", DeprecationWarning)
            found = spglib.standardize_cell(cell, to_primitive=True, symprec=SYMPREC)
    except Exception:  # spglib raises on some degenerate cells: fall back to Niggli
        found = None
    if found is not None:
        lattice, frac, numbers = found
        return np.asarray(lattice), np.asarray(frac), np.asarray(numbers)
    reduced = structure.get_reduced_structure()
    return reduced.lattice.matrix, reduced.frac_coords, np.asarray(reduced.atomic_numbers)


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    cosine = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _canonical_sites(frac: np.ndarray, numbers: np.ndarray) -> list[tuple[int, str, str, str]]:
    species, counts = np.unique(numbers, return_counts=True)
    rarest = species[np.lexsort((species, counts))[0]]
    best: list[tuple[int, str, str, str]] | None = None
    for origin in frac[numbers == rarest]:
        shifted = np.round(np.mod(frac - origin, 1.0), _DECIMALS_FRAC) % 1.0 + 0.0  # no -0.0
        sites = sorted(
            (int(z), *(f"{x:.{_DECIMALS_FRAC}f}" for x in row))
            for z, row in zip(numbers, shifted, strict=True)
        )
        if best is None or sites < best:
            best = sites
    assert best is not None
    return best
