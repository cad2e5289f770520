"""Many atomic systems in ragged numpy arrays: the storage behind every atomistic data set.

Layout (``B`` systems, ``N`` atoms in all):

=================  ==============  =======  ==============================================
field              shape           dtype    meaning
=================  ==============  =======  ==============================================
``numbers``        (N,)            int64    atomic numbers
``positions``      (N, 3)          float64  Cartesian positions, Å
``offsets``        (B + 1,)        int64    system ``i`` is atoms ``offsets[i]:offsets[i+1]``
``cell``           (B, 3, 3)       float64  lattice vectors as rows, Å (zeros for molecules)
``pbc``            (B, 3)          bool     periodic directions
``properties``     B rows          any      per-system scalar columns (ids, energies, …)
``system_arrays``  (B, ...)        float64  per-system tensors (``stress`` (B, 3, 3), eV/Å^3)
``atom_arrays``    (N, ...)        float64  per-atom tensors (``forces`` (N, 3), eV/Å)
=================  ==============  =======  ==============================================

Collections save to and load from ``.npz`` without pickling (``allow_pickle=False``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from matgen.data.convert import arrays_to_atoms, arrays_to_structure

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure

__all__ = ["AtomsCollection", "BadItem"]

_FORMAT_VERSION = 2


@dataclass(frozen=True)
class BadItem:
    """An input item that could not be read: its 0-based row, id, and the reason."""

    row: int
    item: str
    reason: str


@dataclass
class AtomsCollection:
    """Ragged arrays of many systems; see the module docstring for the layout."""

    numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    properties: pd.DataFrame
    system_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    atom_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    bad_items: list[BadItem] = field(default_factory=list)

    def __post_init__(self) -> None:
        n_sys = len(self.offsets) - 1
        n_atoms = int(self.offsets[-1]) if n_sys >= 0 else 0
        if self.positions.shape != (n_atoms, 3) or self.numbers.shape != (n_atoms,):
            raise ValueError(
                f"positions {self.positions.shape} / numbers {self.numbers.shape} do not match "
                f"offsets (total {n_atoms} atoms)"
            )
        if self.cell.shape != (n_sys, 3, 3) or self.pbc.shape != (n_sys, 3):
            raise ValueError(
                f"cell {self.cell.shape} / pbc {self.pbc.shape} do not match {n_sys} systems"
            )
        if len(self.properties) != n_sys:
            raise ValueError(f"properties has {len(self.properties)} rows for {n_sys} systems")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per system, ``(B,)``."""
        return np.diff(self.offsets)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(numbers, positions, cell, pbc)`` of system ``i`` (views, not copies)."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.numbers[lo:hi], self.positions[lo:hi], self.cell[i], self.pbc[i]

    def structure(self, i: int) -> Structure:
        """System ``i`` as a pymatgen ``Structure``."""
        return arrays_to_structure(*self.arrays(i))

    def atoms(self, i: int) -> Atoms:
        """System ``i`` as an ASE ``Atoms``: per-system properties in ``info``; ``energy``,
        ``forces`` and ``stress`` (where present and finite) as results of a
        ``SinglePointCalculator``; other per-atom arrays in ``arrays``."""
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = arrays_to_atoms(*self.arrays(i))
        row = self.properties.iloc[i]
        atoms.info.update({k: _python_value(v) for k, v in row.items() if not _is_missing(v)})
        lo, hi = self.offsets[i], self.offsets[i + 1]
        results = {}
        for key, value in self.atom_arrays.items():
            target = results if key == "forces" else atoms.arrays
            if key != "forces" or np.isfinite(value[lo:hi]).all():
                target[key] = value[lo:hi].copy()
        for key, value in self.system_arrays.items():
            target = results if key in ("energy", "stress") else atoms.info
            if key not in ("energy", "stress") or np.isfinite(value[i]).all():
                target[key] = value[i].copy() if key != "energy" else float(value[i])
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def subset(self, index: np.ndarray | list[int]) -> AtomsCollection:
        """A new collection with the systems ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        counts = self.n_atoms[index]
        atom_index = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in index])
            if len(index)
            else np.zeros(0, dtype=np.int64)
        )
        return AtomsCollection(
            numbers=self.numbers[atom_index],
            positions=self.positions[atom_index],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            cell=self.cell[index],
            pbc=self.pbc[index],
            properties=self.properties.iloc[index].reset_index(drop=True),
            system_arrays={k: v[index] for k, v in self.system_arrays.items()},
            atom_arrays={k: v[atom_index] for k, v in self.atom_arrays.items()},
        )

    @classmethod
    def from_systems(
        cls,
        systems: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        properties: pd.DataFrame,
        *,
        system_arrays: dict[str, np.ndarray] | None = None,
        atom_arrays: dict[str, np.ndarray] | None = None,
        bad_items: list[BadItem] | None = None,
    ) -> AtomsCollection:
        """Concatenate per-system ``(numbers, positions, cell, pbc)`` tuples."""
        counts = np.array([len(s[0]) for s in systems], dtype=np.int64)
        return cls(
            numbers=np.concatenate([s[0] for s in systems]).astype(np.int64)
            if systems
            else np.zeros(0, np.int64),
            positions=np.concatenate([s[1] for s in systems]).astype(np.float64)
            if systems
            else np.zeros((0, 3)),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            cell=np.stack([s[2] for s in systems]).astype(np.float64)
            if systems
            else np.zeros((0, 3, 3)),
            pbc=np.stack([s[3] for s in systems]).astype(bool)
            if systems
            else np.zeros((0, 3), bool),
            properties=properties.reset_index(drop=True),
            system_arrays=system_arrays or {},
            atom_arrays=atom_arrays or {},
            bad_items=bad_items or [],
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the collection to ``path`` (``.npz``) atomically: a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(_FORMAT_VERSION),
            "numbers": self.numbers,
            "positions": self.positions,
            "offsets": self.offsets,
            "cell": self.cell,
            "pbc": self.pbc,
            "property_columns": np.array(list(self.properties.columns), dtype=str),
            "bad_rows": np.array([b.row for b in self.bad_items], dtype=np.int64),
            "bad_ids": np.array([b.item for b in self.bad_items], dtype=str),
            "bad_reasons": np.array([b.reason for b in self.bad_items], dtype=str),
        }
        for j, column in enumerate(self.properties.columns):
            values, missing = _column_to_array(self.properties[column])
            arrays[f"prop{j}"] = values
            arrays[f"propmissing{j}"] = missing
        for key, value in self.system_arrays.items():
            arrays[f"system:{key}"] = value
        for key, value in self.atom_arrays.items():
            arrays[f"atom:{key}"] = value
        tmp = path.with_name(f".{path.name}.{np.random.default_rng().integers(1 << 62)}.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> AtomsCollection:
        """Read a collection written by :meth:`save` (no pickled objects are loaded)."""
        with np.load(path, allow_pickle=False) as z:
            if int(z["format_version"]) != _FORMAT_VERSION:
                raise ValueError(
                    f"{path}: collection format {int(z['format_version'])} is not {_FORMAT_VERSION}"
                )
            columns = [str(c) for c in z["property_columns"]]
            data = {}
            for j, column in enumerate(columns):
                values, missing = z[f"prop{j}"], z[f"propmissing{j}"]
                if values.dtype.kind in "iuf":
                    series = pd.Series(values)
                    if missing.any():
                        series = series.astype(np.float64).where(~missing, np.nan)
                else:
                    decoded = json.loads(str(values))
                    series = pd.Series(decoded, dtype=object)
                    if missing.any():
                        series = series.where(~missing, np.nan)
                    series = series.infer_objects()
                data[column] = series
            properties = pd.DataFrame(data, columns=columns)
            bad = [
                BadItem(int(r), str(i), str(m))
                for r, i, m in zip(z["bad_rows"], z["bad_ids"], z["bad_reasons"], strict=True)
            ]
            return cls(
                numbers=z["numbers"],
                positions=z["positions"],
                offsets=z["offsets"],
                cell=z["cell"],
                pbc=z["pbc"],
                properties=properties,
                system_arrays={k[7:]: z[k] for k in z.files if k.startswith("system:")},
                atom_arrays={k[5:]: z[k] for k in z.files if k.startswith("atom:")},
                bad_items=bad,
            )


def _column_to_array(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A pandas column as a pickle-free array plus a missing-value mask. Numeric columns stay
    arrays; any other column is one JSON text (``str``, ``bool``, ``None`` and numbers keep their
    types), so a cached table equals the freshly read one."""
    missing = series.isna().to_numpy()
    if series.dtype.kind in "iuf":
        return series.to_numpy(), missing
    values = [
        None if m else _python_value(v) for v, m in zip(series.astype(object), missing, strict=True)
    ]
    return np.array(json.dumps(values, allow_nan=True)), missing


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _python_value(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
