"""Data layer: the registry, readers, the batched container, neighbor lists and lattice math.

Everything above this package consumes :class:`AtomsBatch` (atomistic systems) or
:class:`SmilesDataset` (molecular strings); see :mod:`matgen.data.batch` for the batch layout.
"""

from __future__ import annotations

from matgen.data.batch import AtomsBatch
from matgen.data.catalog import CATALOG, DatasetSpec, FileSpec, get_spec
from matgen.data.collection import AtomsCollection, BadItem
from matgen.data.configurations import TargetKeys, read_ase_db, read_extxyz
from matgen.data.crystal_csv import parse_cif, read_crystal_csv
from matgen.data.datasets import AtomsDataset, SmilesDataset, load_dataset
from matgen.data.errors import DataError
from matgen.data.fetch import fetch_dataset
from matgen.data.neighbors import batched_neighbor_list, edge_vectors, neighbor_list
from matgen.data.qm9 import read_qm9_npz
from matgen.data.root import cache_dir, data_root
from matgen.data.smiles import read_smiles_csv

__all__ = [
    "CATALOG",
    "AtomsBatch",
    "AtomsCollection",
    "AtomsDataset",
    "BadItem",
    "DataError",
    "DatasetSpec",
    "FileSpec",
    "SmilesDataset",
    "TargetKeys",
    "batched_neighbor_list",
    "cache_dir",
    "data_root",
    "edge_vectors",
    "fetch_dataset",
    "get_spec",
    "load_dataset",
    "neighbor_list",
    "parse_cif",
    "read_ase_db",
    "read_crystal_csv",
    "read_extxyz",
    "read_qm9_npz",
    "read_smiles_csv",
]
