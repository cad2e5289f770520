"""Crystals as the tensors a crystal diffusion model reads: type indices, fractional coordinates,
lattices, and the per-system conditions.

``B`` crystals, ``N`` atoms in a batch:

===============  =========  =======  ==========================================================
field            shape      dtype    meaning
===============  =========  =======  ==========================================================
``types``        (N,)       int64    index of each atom's element in the model's vocabulary
``frac``         (N, 3)     float    fractional coordinates in [0, 1)
``lattice``      (B, 3, 3)  float    lattice vectors as rows (Å)
``batch``        (N,)       int64    index of each atom's crystal
``n_atoms``      (B,)       int64    atoms per crystal
``properties``   {name: (B,)}        scalar conditions (e.g. ``formation_energy_per_atom``)
===============  =========  =======  ==========================================================

:func:`prepare_collection` Niggli-reduces every cell once (pymatgen, on the host) and saves a
pickle-free ``.npz`` that a training machine without pymatgen reads back with
:meth:`matgen.data.collection.AtomsCollection.load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from matgen.data.collection import AtomsCollection
from matgen.data.errors import DataError

__all__ = ["CrystalBatch", "CrystalDataset", "prepare_collection"]


@dataclass
class CrystalBatch:
    """A batch of crystals in the layout of the module docstring."""

    types: torch.Tensor
    frac: torch.Tensor
    lattice: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    properties: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_graphs(self) -> int:
        return int(self.n_atoms.numel())

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> CrystalBatch:
        """Move to ``device``; floating fields to ``dtype``."""

        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype if x.is_floating_point() else None)

        return CrystalBatch(
            types=move(self.types),
            frac=move(self.frac),
            lattice=move(self.lattice),
            batch=move(self.batch),
            n_atoms=move(self.n_atoms),
            properties={k: move(v) for k, v in self.properties.items()},
        )

    @staticmethod
    def collate(items: Sequence[dict[str, np.ndarray]]) -> CrystalBatch:
        """Concatenate :meth:`CrystalDataset.__getitem__` items (a DataLoader ``collate_fn``)."""
        n_atoms = torch.tensor([len(item["types"]) for item in items], dtype=torch.long)
        keys = sorted(set().union(*(item["properties"] for item in items)))
        return CrystalBatch(
            types=torch.from_numpy(np.concatenate([item["types"] for item in items])),
            frac=torch.from_numpy(np.concatenate([item["frac"] for item in items])),
            lattice=torch.from_numpy(np.stack([item["lattice"] for item in items])),
            batch=torch.repeat_interleave(torch.arange(len(items)), n_atoms),
            n_atoms=n_atoms,
            properties={
                k: torch.tensor(
                    [item["properties"].get(k, np.nan) for item in items], dtype=torch.float64
                )
                for k in keys
            },
        )


class CrystalDataset(torch.utils.data.Dataset):
    """Crystals of an :class:`AtomsCollection` over a fixed element vocabulary.

    Args:
        collection: the crystals (cells as prepared by :func:`prepare_collection`).
        elements: the vocabulary: atomic numbers, in the order of the type indices.
        properties: per-crystal columns of ``collection.properties`` to carry as conditions.
        name: names the data in errors.

    Raises:
        DataError: a crystal holds an element outside ``elements``, or a property is missing.
    """

    def __init__(
        self,
        collection: AtomsCollection,
        elements: Sequence[int],
        *,
        properties: Sequence[str] = (),
        name: str = "crystals",
    ) -> None:
        self.collection = collection
        self.elements = tuple(int(z) for z in elements)
        lookup = np.full(max(119, max(self.elements) + 1), -1, dtype=np.int64)
        lookup[list(self.elements)] = np.arange(len(self.elements))
        self.types = lookup[collection.numbers]
        if (self.types < 0).any():
            atom = int(np.flatnonzero(self.types < 0)[0])
            system = int(np.searchsorted(collection.offsets, atom, side="right") - 1)
            raise DataError(
                f"{name}: element Z={int(collection.numbers[atom])} is outside the model's "
                f"vocabulary of {len(self.elements)} elements",
                item=_item_name(collection, system),
            )
        inverse = np.linalg.inv(collection.cell)
        atom_system = np.repeat(np.arange(len(collection)), collection.n_atoms)
        frac = np.einsum("ni,nij->nj", collection.positions, inverse[atom_system])
        self.frac = frac - np.floor(frac)
        self.property_values: dict[str, np.ndarray] = {}
        for key in properties:
            if key not in collection.properties.columns:
                raise DataError(f"{name}: no property column {key!r}")
            self.property_values[key] = collection.properties[key].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        lo, hi = self.collection.offsets[i], self.collection.offsets[i + 1]
        return {
            "types": self.types[lo:hi],
            "frac": self.frac[lo:hi],
            "lattice": self.collection.cell[i],
            "properties": {k: v[i] for k, v in self.property_values.items()},
        }

    def atom_count_histogram(self) -> np.ndarray:
        """``counts[n]`` = crystals with ``n`` atoms (the de novo prior over sizes)."""
        return np.bincount(self.collection.n_atoms)

    def batch(self, index: Sequence[int]) -> CrystalBatch:
        """The crystals ``index`` as one batch."""
        return CrystalBatch.collate([self[int(i)] for i in index])


def prepare_collection(
    collection: AtomsCollection, *, niggli: bool = True, path: str | Path | None = None
) -> AtomsCollection:
    """Niggli-reduce every cell (positions re-wrapped into it) and optionally save the result.

    The reduced cell describes the same crystal; a canonical cell makes the lattice targets of a
    diffusion model consistent across equivalent inputs (CDVAE's preprocessing does the same).
    """
    from matgen.data.lattice import niggli_reduce

    cells = collection.cell.copy()
    positions = collection.positions.copy()
    if niggli:
        for i in range(len(collection)):
            lo, hi = collection.offsets[i], collection.offsets[i + 1]
            cells[i], positions[lo:hi] = niggli_reduce(collection.cell[i], positions[lo:hi])
    prepared = AtomsCollection(
        numbers=collection.numbers.copy(),
        positions=positions,
        offsets=collection.offsets.copy(),
        cell=cells,
        pbc=collection.pbc.copy(),
        properties=collection.properties.copy(),
    )
    if path is not None:
        prepared.save(path)
    return prepared


def _item_name(collection: AtomsCollection, i: int) -> str:
    for column in ("material_id", "id", "name"):
        if column in collection.properties.columns:
            return str(collection.properties[column].iloc[i])
    return f"row {i}"
