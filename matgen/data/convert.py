"""Conversions of one atomic system between pymatgen, ASE, RDKit and plain arrays.

The plain-array form of a system is ``(numbers, positions, cell, pbc)``: atomic numbers ``(n,)``,
Cartesian positions ``(n, 3)`` in Å, cell ``(3, 3)`` in Å with lattice vectors as rows (ASE's and
pymatgen's convention), and periodicity ``(3,)`` as booleans. A molecule has ``pbc`` all False and
may carry any cell (often zeros).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from matgen.data.errors import DataError

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure
    from rdkit import Chem

__all__ = [
    "arrays_to_atoms",
    "arrays_to_structure",
    "atoms_to_arrays",
    "check_system",
    "structure_to_arrays",
    "xyz_to_mol",
]

MAX_Z = 118


def check_system(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    *,
    item: str | None = None,
    min_volume: float = 1e-6,
) -> None:
    """Validate one system's arrays.

    Checks: at least one atom, known atomic numbers (1..118), finite positions and cell, and a
    non-degenerate cell: the periodic lattice vectors span a volume (3D), area (2D) or length
    (1D) above ``min_volume``.

    Raises:
        DataError: naming ``item`` and what is wrong.
    """
    if len(numbers) == 0:
        raise DataError("structure has no atoms", item=item)
    bad = (numbers < 1) | (numbers > MAX_Z)
    if bad.any():
        raise DataError(f"unknown element: atomic number {int(numbers[bad][0])}", item=item)
    if not np.isfinite(positions).all():
        atom = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise DataError(f"non-finite position for atom {atom}", item=item)
    if not np.isfinite(cell).all():
        raise DataError("non-finite cell", item=item)
    periodic = np.asarray(pbc, dtype=bool).reshape(-1)
    if periodic.any():
        # The periodic lattice vectors must be independent: volume for 3D, area for 2D, length
        # for 1D (square root of the Gram determinant).
        vectors = np.asarray(cell, dtype=np.float64)[np.broadcast_to(periodic, 3)]
        measure = float(np.sqrt(max(np.linalg.det(vectors @ vectors.T), 0.0)))
        if measure <= min_volume:
            kind = {3: "volume", 2: "area", 1: "length"}[len(vectors)]
            raise DataError(f"degenerate cell: periodic {kind} {measure:.3g}", item=item)


def structure_to_arrays(
    structure: Structure, *, item: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(numbers, positions, cell, pbc)`` of an ordered pymatgen ``Structure``.

    Raises:
        DataError: for disordered sites, unknown species or a degenerate cell.
    """
    if not structure.is_ordered:
        raise DataError("disordered structure (partial occupancies) is not supported", item=item)
    from pymatgen.core import DummySpecies

    for site in structure:
        if isinstance(site.specie, DummySpecies):
            raise DataError(f"unknown element {site.specie.symbol!r}", item=item)
    numbers = np.array([site.specie.Z for site in structure], dtype=np.int64)
    positions = np.array(structure.cart_coords, dtype=np.float64).reshape(-1, 3)
    cell = np.array(structure.lattice.matrix, dtype=np.float64)
    pbc = np.array(structure.lattice.pbc, dtype=bool)
    check_system(numbers, positions, cell, pbc, item=item)
    return numbers, positions, cell, pbc


def arrays_to_structure(
    numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray | None = None
) -> Structure:
    """Build a pymatgen ``Structure`` from plain arrays (Cartesian positions, rows of ``cell``)."""
    from pymatgen.core import Lattice, Structure

    pbc_tuple = (True, True, True) if pbc is None else tuple(bool(p) for p in pbc)
    lattice = Lattice(np.asarray(cell, dtype=np.float64), pbc=pbc_tuple)
    return Structure(
        lattice,
        [int(z) for z in numbers],
        np.asarray(positions, dtype=np.float64),
        coords_are_cartesian=True,
    )


def atoms_to_arrays(
    atoms: Atoms, *, item: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(numbers, positions, cell, pbc)`` of an ASE ``Atoms``."""
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    check_system(numbers, positions, cell, pbc, item=item)
    return numbers, positions, cell, pbc


def arrays_to_atoms(
    numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> Atoms:
    """Build an ASE ``Atoms`` from plain arrays."""
    from ase import Atoms

    return Atoms(
        numbers=np.asarray(numbers),
        positions=np.asarray(positions, dtype=np.float64),
        cell=np.asarray(cell, dtype=np.float64),
        pbc=np.asarray(pbc, dtype=bool),
    )


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Silence C-level stdout/stderr (YAeHMOP prints distance warnings there) for a block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        try:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def xyz_to_mol(
    numbers: np.ndarray,
    positions: np.ndarray,
    *,
    charge: int = 0,
    hueckel: bool = True,
    item: str | None = None,
) -> Chem.Mol:
    """Perceive bonds and bond orders from 3D coordinates with RDKit's ``rdDetermineBonds``.

    Bond orders come from the xyz2mol algorithm (Kim & Kim 2015) as implemented in RDKit, for a
    molecule of total ``charge``. Connectivity comes from an extended-Hückel calculation
    (``hueckel=True``, robust for strained rings and cages) or from covalent radii.

    Raises:
        DataError: when RDKit cannot assign bond orders consistent with ``charge``.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    block = [str(len(numbers)), ""]
    block += [
        f"{Chem.GetPeriodicTable().GetElementSymbol(int(z))} {x:.8f} {y:.8f} {w:.8f}"
        for z, (x, y, w) in zip(numbers, np.asarray(positions, dtype=np.float64), strict=True)
    ]
    mol = Chem.MolFromXYZBlock("\n".join(block) + "\n")
    if mol is None:
        raise DataError("RDKit could not read the coordinates", item=item)
    try:
        if hueckel:
            with _quiet_native_output():
                rdDetermineBonds.DetermineBonds(mol, charge=charge, useHueckel=True)
        else:
            rdDetermineBonds.DetermineBonds(mol, charge=charge)
    except (ValueError, RuntimeError) as exc:
        raise DataError(f"bond perception failed: {exc}", item=item) from None
    return mol
