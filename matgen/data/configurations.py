"""Readers for labelled configurations (force-field data): extxyz files and ASE databases.

Energies (eV), forces (eV/Å) and stresses (eV/Å^3, ASE sign, returned as 3x3) are looked up under
configurable key names, in this order: the per-configuration ``info``/``arrays``, then the
results a reader attached as a calculator (ASE stores ``energy``/``forces``/``stress`` there).
Missing values are NaN, so sets with and without stress can be mixed. Every other scalar
per-configuration key (``config_type``, …) becomes a property column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from matgen.data.collection import AtomsCollection
from matgen.data.convert import atoms_to_arrays
from matgen.data.errors import DataError
from matgen.data.integrity import text_stream

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["DEFAULT_KEYS", "TargetKeys", "collection_from_atoms", "read_ase_db", "read_extxyz"]


@dataclass(frozen=True)
class TargetKeys:
    """Names under which a data set stores its labels (e.g. ``REF_energy`` for MACE-style files)."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"


DEFAULT_KEYS = TargetKeys()


def read_extxyz(path: str | Path, *, keys: TargetKeys = DEFAULT_KEYS) -> AtomsCollection:
    """Read every frame of an (optionally gzipped) extxyz file.

    Raises:
        DataError: naming the file and frame for unreadable frames, unknown elements, or
            non-finite coordinates.
    """
    from ase.io.extxyz import read_xyz

    stream = text_stream(path)
    frames: list[Atoms] = []
    try:
        for atoms in read_xyz(stream, index=slice(None)):
            frames.append(atoms)
    except Exception as exc:  # ASE raises several types for malformed frames
        raise DataError(f"malformed extxyz frame: {exc}", path=path, row=len(frames)) from None
    if not frames:
        raise DataError("no frames", path=path)
    return collection_from_atoms(frames, keys=keys, path=path)


def read_ase_db(
    path: str | Path, *, keys: TargetKeys = DEFAULT_KEYS, selection: str | None = None
) -> AtomsCollection:
    """Read the rows of an ASE database (SQLite file, JSON file, or a database URL).

    Per-row ``key_value_pairs`` become properties; per-row ``data`` entries with one row per atom
    are per-atom arrays, others per-system arrays.
    """
    import ase.db

    if isinstance(path, Path) or "://" not in str(path):
        if not Path(path).is_file():
            raise DataError("database file not found", path=path)
    frames = []
    with ase.db.connect(str(path)) as db:
        for row in db.select(selection):
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            for key, value in row.data.items():
                value = np.asarray(value)
                if value.ndim >= 1 and value.shape[0] == len(atoms):
                    atoms.arrays[key] = value
                else:
                    atoms.info[key] = value
            atoms.info.setdefault("db_id", row.id)
            atoms.info["_item"] = f"id {row.id}"
            frames.append(atoms)
    if not frames:
        raise DataError("no rows selected", path=path)
    return collection_from_atoms(frames, keys=keys, path=path)


def _lookup(atoms: Atoms, key: str, per_atom: bool) -> np.ndarray | None:
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return np.asarray(store[key], dtype=np.float64)
    calc = atoms.calc
    results = getattr(calc, "results", {}) if calc is not None else {}
    if key in results:
        return np.asarray(results[key], dtype=np.float64)
    return None


def _stress_3x3(value: np.ndarray) -> np.ndarray:
    if value.shape == (3, 3):
        return value
    if value.shape == (9,):
        return value.reshape(3, 3)
    if value.shape == (6,):
        from ase.stress import voigt_6_to_full_3x3_stress

        return voigt_6_to_full_3x3_stress(value)
    raise ValueError(f"stress of shape {value.shape}; expected (6,), (9,) or (3, 3)")


def collection_from_atoms(
    frames: list[Atoms], *, keys: TargetKeys = DEFAULT_KEYS, path: str | Path | None = None
) -> AtomsCollection:
    """Build a collection from ASE ``Atoms`` with their labels (see the module docstring)."""
    systems, energies, stresses, forces, rows = [], [], [], [], []
    skip = {keys.energy, keys.forces, keys.stress}
    for k, atoms in enumerate(frames):
        try:
            item = atoms.info.pop("_item", f"frame {k}")
            systems.append(atoms_to_arrays(atoms, item=item))
            energy = _lookup(atoms, keys.energy, per_atom=False)
            force = _lookup(atoms, keys.forces, per_atom=True)
            stress = _lookup(atoms, keys.stress, per_atom=False)
            if force is not None and force.shape != (len(atoms), 3):
                raise ValueError(f"forces of shape {force.shape} for {len(atoms)} atoms")
            energies.append(np.nan if energy is None else float(energy))
            forces.append(np.full((len(atoms), 3), np.nan) if force is None else force)
            stresses.append(np.full((3, 3), np.nan) if stress is None else _stress_3x3(stress))
        except DataError as exc:
            raise DataError(exc.reason, path=path, row=k, item=exc.item) from None
        except ValueError as exc:
            raise DataError(str(exc), path=path, row=k, item=item) from None
        rows.append(
            {
                key: value
                for key, value in atoms.info.items()
                if key not in skip and np.ndim(value) == 0 and not isinstance(value, dict)
            }
        )
    system_arrays = {"energy": np.array(energies)}
    atom_arrays = {}
    if not all(np.isnan(s).all() for s in stresses):
        system_arrays["stress"] = np.stack(stresses)
    if not all(np.isnan(f).all() for f in forces):
        atom_arrays["forces"] = np.concatenate(forces)
    return AtomsCollection.from_systems(
        systems, pd.DataFrame(rows), system_arrays=system_arrays, atom_arrays=atom_arrays
    )
