"""Screening inputs: crystals from CIF files, folders or zips of CIFs, extxyz, ASE databases and
CDVAE CSVs, read with :func:`matgen.data.structure_files.read_structures`.

Nothing unreadable stops a run: a file that cannot be opened at all, and every item inside a
file that cannot be parsed, becomes an :class:`UnreadableInput` with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from matgen.data.errors import DataError

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["Candidate", "UnreadableInput", "read_candidates"]


@dataclass(frozen=True)
class Candidate:
    """One input crystal: where it came from (``file`` or ``file:item``) and the structure."""

    source: str
    structure: Structure


@dataclass(frozen=True)
class UnreadableInput:
    """An input file or item that could not be read, and why."""

    source: str
    reason: str


def read_candidates(
    paths: Sequence[str | Path],
) -> tuple[list[Candidate], list[UnreadableInput]]:
    """Every crystal in ``paths``, in order, and the inputs that could not be read.

    Sources name the item inside its file (``file.cif``, ``archive.zip:member.cif``,
    ``file.extxyz:3``, ``file.csv:MATERIAL_ID``), so a rerun over the same inputs names the
    same items.
    """
    from matgen.data.structure_files import read_structures

    candidates: list[Candidate] = []
    unreadable: list[UnreadableInput] = []
    for raw in paths:
        path = Path(raw)
        try:
            found = read_structures(path)
        except DataError as exc:
            unreadable.append(UnreadableInput(str(path), exc.reason))
            continue
        except Exception as exc:  # a corrupt zip or CSV raises whatever its reader raises
            unreadable.append(UnreadableInput(str(path), f"{type(exc).__name__}: {exc}"))
            continue
        is_table = path.name.lower().endswith((".csv", ".csv.gz"))
        for item, structure in zip(found.ids, found.structures, strict=True):
            candidates.append(Candidate(f"{path.name}:{item}" if is_table else item, structure))
        for bad in found.bad_items:
            item = f"{path.name}:{bad.item}" if is_table else bad.item
            unreadable.append(UnreadableInput(item, bad.reason))
    return candidates, unreadable
