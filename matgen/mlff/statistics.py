"""Training-set statistics a MACE model is built with, and where labelled configurations come from.

- Reference energies ``E0``: given (e.g. the isolated-atom energies shipped with a data set), or
  the least-squares solution of ``sum_i E0[z_i] = E`` over the training set.
- ``avg_num_neighbors``: mean number of neighbours within ``r_max`` per atom.
- ``shift``: mean interaction energy per atom, ``(E - sum_i E0[z_i]) / N``; ``scale``: root mean
  square of the force components (MACE's "RMS forces" scaling), or the standard deviation of the
  per-atom interaction energy when no forces are labelled.

Configuration sources are a registered data set and split (``{"dataset": "ethanol", "split":
"train"}``) or a file (``{"path": "data.xyz"}``, extxyz or ASE database), with label key names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matgen.data import AtomsDataset, TargetKeys, load_dataset, read_ase_db, read_extxyz
from matgen.data.batch import AtomsBatch
from matgen.data.errors import DataError

__all__ = [
    "DatasetStatistics",
    "batch_errors",
    "fit_atomic_energies",
    "isolated_atom_energies",
    "load_configurations",
    "training_statistics",
]


def load_configurations(
    source: dict[str, Any] | str, *, cutoff: float | None = None
) -> AtomsDataset:
    """Labelled configurations from ``{"dataset", "split"}`` or ``{"path"}`` (plus optional
    ``keys: {energy, forces, stress}``), or a string ``NAME:SPLIT`` / a file path."""
    if isinstance(source, str):
        if Path(source).exists():
            source = {"path": source}
        elif ":" in source:
            name, split = source.split(":", 1)
            source = {"dataset": name, "split": split}
        else:
            raise DataError("not a file and not NAME:SPLIT of a registered data set", path=source)
    keys = TargetKeys(**source.get("keys", {}))
    if "dataset" in source:
        return load_dataset(source["dataset"], source["split"], cutoff=cutoff, keys=keys)
    if "path" not in source:
        raise ValueError(f"a data source needs 'dataset' and 'split', or 'path': got {source}")
    path = Path(source["path"]).expanduser()
    if not path.exists():
        raise DataError("no such file", path=path)
    is_db = path.suffix in (".db", ".json") or str(path).startswith(("postgresql:", "sqlite:"))
    collection = read_ase_db(path, keys=keys) if is_db else read_extxyz(path, keys=keys)
    return AtomsDataset(collection, name=path.name, cutoff=cutoff)


def _counts(dataset: AtomsDataset, elements: Sequence[int]) -> np.ndarray:
    coll = dataset.collection
    column = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(coll), len(elements)))
    offsets = np.concatenate([[0], np.cumsum(coll.n_atoms)])
    for s in range(len(coll)):
        for z in coll.numbers[offsets[s] : offsets[s + 1]]:
            if int(z) not in column:
                raise DataError(f"element Z={int(z)} is not in the model's list", item=s)
            counts[s, column[int(z)]] += 1
    return counts


def fit_atomic_energies(dataset: AtomsDataset, elements: Sequence[int]) -> np.ndarray:
    """Least-squares ``E0`` ``(len(elements),)`` from the labelled energies (eV)."""
    energy = dataset.collection.system_arrays.get("energy")
    if energy is None:
        raise DataError("no energy labels to fit reference energies on", path=dataset.name)
    counts = _counts(dataset, elements)
    solution, *_ = np.linalg.lstsq(counts, np.asarray(energy, dtype=np.float64), rcond=None)
    return solution


@dataclass(frozen=True)
class DatasetStatistics:
    elements: tuple[int, ...]
    atomic_energies: tuple[float, ...]
    avg_num_neighbors: float
    scale: float
    shift: float

    def as_config(self) -> dict[str, Any]:
        return {
            "elements": self.elements,
            "atomic_energies": self.atomic_energies,
            "avg_num_neighbors": self.avg_num_neighbors,
            "scale": self.scale,
            "shift": self.shift,
        }


def training_statistics(
    dataset: AtomsDataset,
    *,
    r_max: float,
    elements: Sequence[int] | None = None,
    atomic_energies: dict[int, float] | None = None,
) -> DatasetStatistics:
    """Every statistic of the module docstring, computed on ``dataset``."""
    coll = dataset.collection
    elements = (
        tuple(sorted(set(int(z) for z in coll.numbers))) if elements is None else tuple(elements)
    )
    if atomic_energies is None:
        e0 = fit_atomic_energies(dataset, elements)
    else:
        missing = [z for z in elements if z not in atomic_energies]
        if missing:
            raise DataError(f"no reference energy for elements {missing}", path=dataset.name)
        e0 = np.array([atomic_energies[z] for z in elements])
    counts = _counts(dataset, elements)
    energy = np.asarray(coll.system_arrays["energy"], dtype=np.float64)
    per_atom = (energy - counts @ e0) / coll.n_atoms
    shift = float(per_atom.mean())
    forces = coll.atom_arrays.get("forces")
    if forces is not None and np.isfinite(forces).all():
        scale = float(np.sqrt(np.mean(np.asarray(forces) ** 2)))
    else:
        scale = float(per_atom.std())
    n_edges = 0
    for start in range(0, len(coll), 256):
        idx = list(range(start, min(start + 256, len(coll))))
        n_edges += AtomsBatch.from_collection(coll, idx).with_neighbors(r_max).num_edges
    return DatasetStatistics(
        elements=elements,
        atomic_energies=tuple(float(e) for e in e0),
        avg_num_neighbors=n_edges / int(coll.n_atoms.sum()),
        scale=scale if scale > 0 else 1.0,
        shift=shift,
    )


def isolated_atom_energies(dataset: AtomsDataset) -> dict[int, float]:
    """``{Z: E}`` from a set of single-atom configurations (e.g. ``ethanol:isolated_atoms``)."""
    out = {}
    energy = dataset.collection.system_arrays["energy"]
    offsets = np.concatenate([[0], np.cumsum(dataset.collection.n_atoms)])
    for s in range(len(dataset)):
        numbers = dataset.collection.numbers[offsets[s] : offsets[s + 1]]
        if len(numbers) != 1:
            raise DataError("not an isolated atom", path=dataset.name, row=s)
        out[int(numbers[0])] = float(energy[s])
    return out


def batch_errors(pred: dict[str, torch.Tensor], batch: AtomsBatch) -> dict[str, torch.Tensor]:
    """Per-item errors ``prediction - label`` for every labelled quantity present in both:
    ``energy_per_atom`` (B,), ``forces`` (N, 3), ``stress`` (B, 3, 3)."""
    out = {}
    if "energy" in batch.system_props:
        out["energy_per_atom"] = (pred["energy"] - batch.system_props["energy"]) / batch.n_atoms
    if "forces" in batch.atom_props and "forces" in pred:
        out["forces"] = pred["forces"] - batch.atom_props["forces"]
    if "stress" in batch.system_props and "stress" in pred:
        out["stress"] = pred["stress"] - batch.system_props["stress"]
    return out
