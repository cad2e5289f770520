"""Read crystals from the files users hand in: CIF files, folders or zips of CIFs, extxyz, ASE
databases and CDVAE-style CSVs. Unreadable items are recorded with their reason, never fatal."""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from matgen.data.collection import BadItem
from matgen.data.convert import arrays_to_structure, atoms_to_arrays
from matgen.data.errors import DataError

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["StructureSet", "read_structures"]


@dataclass
class StructureSet:
    """Structures with ids (file names, material ids or ``file:index``) and the items that failed."""

    structures: list[Structure] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    bad_items: list[BadItem] = field(default_factory=list)

    def extend(self, other: StructureSet) -> None:
        offset = len(self.structures) + len(self.bad_items)
        self.structures += other.structures
        self.ids += other.ids
        self.bad_items += [BadItem(b.row + offset, b.item, b.reason) for b in other.bad_items]


def _structure_from_cif_text(text: str, name: str) -> Structure:
    from matgen.data.crystal_csv import parse_cif

    return arrays_to_structure(*parse_cif(text, item=name))


def read_structures(*paths: str | Path) -> StructureSet:
    """Read every structure from ``paths`` (files or folders), in order.

    Formats by suffix: ``.cif``; a folder (its ``*.cif`` files, sorted); ``.zip`` (its ``.cif``
    members); ``.csv``/``.csv.gz`` with a ``cif`` column; ``.db`` (ASE database); anything else
    ASE reads (``.extxyz``, ``.xyz``, ``.traj``, also gzipped).

    Raises:
        DataError: only when a path does not exist; bad items inside files are recorded.
    """
    out = StructureSet()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError("no such file or folder", path=path)
        out.extend(_read_one(path))
    return out


def _read_one(path: Path) -> StructureSet:
    result = StructureSet()
    name = path.name.lower()
    if path.is_dir():
        for k, file in enumerate(sorted(path.glob("*.cif"))):
            _add_cif(result, file.read_text(errors="replace"), str(file), k)
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            members = sorted(m for m in archive.namelist() if m.lower().endswith(".cif"))
            for k, member in enumerate(members):
                _add_cif(
                    result,
                    archive.read(member).decode(errors="replace"),
                    f"{path.name}:{member}",
                    k,
                )
    elif name.endswith(".cif"):
        _add_cif(result, path.read_text(errors="replace"), str(path), 0)
    elif name.endswith((".csv", ".csv.gz")):
        from matgen.data.crystal_csv import read_crystal_csv

        collection = read_crystal_csv(path, on_error="skip", progress=False, cache=False)
        id_column = next(
            (c for c in ("material_id", "id", "name") if c in collection.properties), None
        )
        for i in range(len(collection)):
            result.structures.append(collection.structure(i))
            result.ids.append(
                str(collection.properties[id_column].iloc[i]) if id_column else f"{path.name}:{i}"
            )
        result.bad_items += collection.bad_items
    else:
        _add_ase(result, path)
    return result


def _add_cif(result: StructureSet, text: str, name: str, row: int) -> None:
    try:
        structure = _structure_from_cif_text(text, name)
    except DataError as exc:
        result.bad_items.append(BadItem(row, name, exc.reason))
        return
    result.structures.append(structure)
    result.ids.append(name)


def _add_ase(result: StructureSet, path: Path) -> None:
    import ase.io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if path.suffix == ".db":
                import ase.db

                frames = [row.toatoms() for row in ase.db.connect(str(path)).select()]
            elif path.name.endswith(".gz"):
                from matgen.data.integrity import text_stream

                fmt = "extxyz" if ".xyz" in path.name or ".extxyz" in path.name else None
                frames = ase.io.read(text_stream(path), index=":", format=fmt)
            else:
                frames = ase.io.read(path, index=":")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"unreadable: {exc}", path=path) from None
    for k, atoms in enumerate(frames):
        item = f"{path.name}:{k}"
        try:
            result.structures.append(arrays_to_structure(*atoms_to_arrays(atoms, item=item)))
            result.ids.append(item)
        except DataError as exc:
            result.bad_items.append(BadItem(k, item, exc.reason))
