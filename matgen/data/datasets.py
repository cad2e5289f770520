"""Torch datasets over the readers, and :func:`load_dataset` for the registered sets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from matgen.data.batch import AtomsBatch
from matgen.data.catalog import DatasetSpec, get_spec
from matgen.data.collection import AtomsCollection, BadItem
from matgen.data.configurations import DEFAULT_KEYS, TargetKeys, read_extxyz
from matgen.data.convert import xyz_to_mol
from matgen.data.crystal_csv import read_crystal_csv
from matgen.data.errors import DataError
from matgen.data.integrity import verify_file
from matgen.data.mp_reference import read_ehull_labels, read_elemental_references
from matgen.data.qm9 import read_qm9_npz
from matgen.data.root import data_root
from matgen.data.smiles import read_smiles_csv

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure
    from rdkit import Chem

__all__ = ["AtomsDataset", "SmilesDataset", "load_dataset"]


class AtomsDataset(Dataset):
    """Atomistic systems (crystals, molecules or labelled configurations) from one split.

    Indexing gives a one-system :class:`AtomsBatch` (with edges when ``cutoff`` is set) that
    :meth:`AtomsBatch.collate` joins; :meth:`loader` builds the DataLoader.

    Args:
        collection: the systems.
        name: data set and split, used in messages (``mp_20/test``).
        cutoff: neighbor-list radius in Å for each item, or None for no edges.
        dtype: floating dtype of the items.
        id_column: property column that identifies a system (``material_id``).
    """

    def __init__(
        self,
        collection: AtomsCollection,
        *,
        name: str = "",
        cutoff: float | None = None,
        dtype: torch.dtype = torch.float64,
        id_column: str | None = None,
    ) -> None:
        self.collection = collection
        self.name = name
        self.cutoff = cutoff
        self.dtype = dtype
        if id_column is None:
            id_column = next(
                (c for c in ("material_id", "index") if c in collection.properties), None
            )
        self.id_column = id_column

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, i: int) -> AtomsBatch:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.name}: index {i} out of range for {len(self)} systems")
        i = i % len(self)
        item = AtomsBatch.from_collection(
            self.collection, [i], id_column=self.id_column, dtype=self.dtype
        )
        return item.with_neighbors(self.cutoff) if self.cutoff is not None else item

    @property
    def properties(self) -> pd.DataFrame:
        """Per-system property columns (one row per system)."""
        return self.collection.properties

    @property
    def bad_items(self) -> list[BadItem]:
        """Rows skipped while reading (``on_error="skip"``)."""
        return self.collection.bad_items

    def item_id(self, i: int) -> str:
        return str(self.properties[self.id_column].iloc[i]) if self.id_column else str(i)

    def structure(self, i: int) -> Structure:
        """System ``i`` as a pymatgen ``Structure``."""
        return self.collection.structure(i)

    def structures(self) -> list[Structure]:
        """Every system as a pymatgen ``Structure``."""
        return [self.collection.structure(i) for i in range(len(self))]

    def atoms(self, i: int) -> Atoms:
        """System ``i`` as ASE ``Atoms`` with properties in ``info`` and labels attached."""
        return self.collection.atoms(i)

    def mol(self, i: int, *, charge: int = 0) -> Chem.Mol:
        """Molecule ``i`` as an RDKit ``Mol`` with bonds perceived from its coordinates."""
        numbers, positions, _, pbc = self.collection.arrays(i)
        if pbc.any():
            raise DataError(
                "periodic systems have no RDKit molecule", item=f"{self.name}:{self.item_id(i)}"
            )
        return xyz_to_mol(numbers, positions, charge=charge, item=f"{self.name}:{self.item_id(i)}")

    def loader(self, batch_size: int, *, shuffle: bool = False, **kwargs: Any) -> DataLoader:
        """A DataLoader yielding :class:`AtomsBatch` objects."""
        return DataLoader(
            self, batch_size=batch_size, shuffle=shuffle, collate_fn=AtomsBatch.collate, **kwargs
        )


class SmilesDataset(Dataset):
    """Molecules as SMILES strings from one split; indexing gives the string."""

    def __init__(self, table: pd.DataFrame, *, name: str = "") -> None:
        self.table = table.reset_index(drop=True)
        self.smiles: list[str] = self.table["smiles"].tolist()
        self.name = name

    def __len__(self) -> int:
        return len(self.smiles)

    def __getitem__(self, i: int) -> str:
        return self.smiles[i]

    @property
    def properties(self) -> pd.DataFrame:
        return self.table

    def mol(self, i: int) -> Chem.Mol:
        """Molecule ``i`` as an RDKit ``Mol``; raises :class:`DataError` for invalid SMILES."""
        from rdkit import Chem, rdBase

        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(self.smiles[i])
        if mol is None:
            raise DataError(f"invalid SMILES {self.smiles[i]!r}", item=f"{self.name} row {i}")
        return mol


def load_dataset(
    name: str,
    split: str | None = None,
    *,
    root: str | Path | None = None,
    verify: bool = True,
    on_error: str = "raise",
    progress: bool = True,
    cutoff: float | None = None,
    keys: TargetKeys = DEFAULT_KEYS,
) -> Any:
    """Load a registered data set from the data root.

    Args:
        name: registry name (``matgen data list`` shows them).
        split: one split, or None for a dict of all splits.
        root: data root (default :func:`matgen.data.root.data_root`).
        verify: check each file's size and sha256 before reading.
        on_error: ``"raise"`` or ``"skip"`` bad rows (crystal CSVs).
        progress: progress bar while parsing.
        cutoff: neighbor-list radius for items of atomistic sets.
        keys: label key names for force-field sets.

    Returns:
        :class:`AtomsDataset` (crystals, QM9, force-field sets), :class:`SmilesDataset`, or for
        ``mp_reference`` a dict of ComputedEntry objects / a DataFrame; a dict of them when
        ``split`` is None.
    """
    spec = get_spec(name)
    base = Path(root) if root is not None else data_root()
    splits = spec.splits if split is None else (split,)
    cache: dict[Path, Any] = {}

    def read(file_split: str) -> Any:
        fs = spec.file(file_split)
        path = base / fs.path
        if path not in cache:
            if verify:
                verify_file(path, fs.sha256, size=fs.size)
            cache[path] = _read_file(
                spec, fs.split, path, on_error=on_error, progress=progress, keys=keys
            )
        return cache[path]

    out = {s: _wrap(spec, s, read(s), cutoff=cutoff) for s in splits}
    return out if split is None else out[split]


def _read_file(spec: DatasetSpec, split: str, path: Path, **kw: Any) -> Any:
    fmt = spec.format
    if fmt == "cdvae_csv":
        if split == "train_index":
            return pd.read_csv(path)
        return read_crystal_csv(path, on_error=kw["on_error"], progress=kw["progress"])
    if fmt == "extxyz":
        return read_extxyz(path, keys=kw["keys"])
    if fmt == "qm9_npz":
        return read_qm9_npz(path)
    if fmt == "smiles_csv":
        return read_smiles_csv(path)
    if fmt == "mp_reference":
        return (
            read_elemental_references(path)
            if split == "elemental_references"
            else read_ehull_labels(path)
        )
    raise ValueError(f"data set {spec.name!r} has unknown format {fmt!r}")


def _wrap(spec: DatasetSpec, split: str, data: Any, *, cutoff: float | None) -> Any:
    label = f"{spec.name}/{split}"
    if spec.format == "mp_reference" or split == "train_index":
        return data
    if spec.format == "smiles_csv":
        if "split" in data.columns and split in ("train", "val", "test"):
            labels = data["split"].replace({"valid": "val"}).to_numpy()
            data = data.iloc[np.flatnonzero(labels == split)]
        return SmilesDataset(data, name=label)
    if spec.format == "qm9_npz":
        data = data.subset(np.flatnonzero(data.properties["split"].to_numpy() == split))
    return AtomsDataset(data, name=label, cutoff=cutoff)
