"""The Materials Project reference data behind the built-in hull, read from the data root.

Sources (relative to the data root, see its README):

- formation energies (eV/atom) of the MP-20 train/val/test and MPTS-52 val/test rows
  (``MP_FORMATION_SOURCES``); rows without a formation energy are skipped, and an id that occurs
  in several files keeps its lowest formation energy;
- the 89 MP elemental reference entries (``MP_ELEMENTAL_SOURCE``): the lowest-energy MP2020-
  compatible GGA(+U) entry of each element, which fixes the energy scale ``μ_el`` (eV/atom);
- MP's energy-above-hull labels (``MP_LABEL_SOURCE``, optional): the ids MP puts on its hull,
  used only to tell whether the reference holds every MP hull phase of a chemical system.

Reading the CSVs takes seconds, so :func:`load_mp_reference` writes the parsed table to
``cache_dir()/mp_hull_reference_<key>.json.gz``, keyed by the sha256 of every source file; a
rerun reads only that file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from matgen.data.errors import DataError
from matgen.data.integrity import sha256_file
from matgen.data.mp_reference import read_elemental_references
from matgen.data.root import cache_dir, data_root

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "MP_ELEMENTAL_SOURCE",
    "MP_FORMATION_SOURCES",
    "MP_LABEL_SOURCE",
    "MPReferenceData",
    "load_mp_reference",
]

MP_FORMATION_SOURCES = (
    "mp_20/train_rebuilt_partial.csv.gz",
    "mp_20/val.csv.gz",
    "mp_20/test.csv.gz",
    "mpts_52/val.csv.gz",
    "mpts_52/test.csv.gz",
)
MP_ELEMENTAL_SOURCE = "mp_reference/2023-02-07-mp-elemental-reference-entries.json.gz"
MP_LABEL_SOURCE = "mp_reference/mp_ehull_labels_hyperconvexhull.csv.gz"
_FORMAT = 1
_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+'?([^'\n]+?)'?\s*$", re.MULTILINE)


@dataclass
class MPReferenceData:
    """The parsed MP reference: one row per material id, plus the elemental scale.

    Attributes:
        root: the data root the sources were read from.
        ids: material ids, unique.
        formulas: each id's formula (from the CIF's ``_chemical_formula_sum``).
        formation_energies: eV/atom, MP's corrected formation energy per atom.
        source_files: index into ``MP_FORMATION_SOURCES`` of the row kept for each id.
        elemental_energies: ``μ_el``, eV/atom, the MP elemental reference entries' energies.
        elemental_ids: the material id of each element's reference entry.
        stable_ids: ``{"A-B-...": ids MP puts on the hull}`` for systems of two or more elements
            (empty when the label file is absent).
        sources: ``{relative path: sha256}`` of every file read.
    """

    root: Path
    ids: list[str]
    formulas: list[str]
    formation_energies: list[float]
    source_files: list[int]
    elemental_energies: dict[str, float]
    elemental_ids: dict[str, str]
    stable_ids: dict[str, list[str]]
    sources: dict[str, str]
    _cifs: dict[str, str] = field(default_factory=dict, repr=False)

    def missing_stable_ids(self, elements: frozenset[str]) -> list[str]:
        """MP hull phases (label 0) of ``elements`` or any of its subsystems of two or more
        elements that the reference lacks: empty when the reference holds MP's whole hull."""
        known = self._id_set
        missing = []
        symbols = sorted(elements)
        for k in range(2, len(symbols) + 1):
            for subset in combinations(symbols, k):
                missing += [i for i in self.stable_ids.get("-".join(subset), ()) if i not in known]
        return missing

    @property
    def _id_set(self) -> set[str]:
        cached = self.__dict__.get("_ids_cached")
        if cached is None:
            cached = self.__dict__["_ids_cached"] = set(self.ids)
        return cached

    def structures(self, ids: list[str]) -> dict[str, Structure]:
        """The MP structures of ``ids`` (those in the formation-energy sources), parsed from
        their CIFs; the CSVs are read once, on the first call."""
        from pymatgen.core import Structure

        if not self._cifs:
            for k, name in enumerate(MP_FORMATION_SOURCES):
                table = pd.read_csv(self.root / name, usecols=["material_id", "cif"])
                keep = {i for i, s in zip(self.ids, self.source_files, strict=True) if s == k}
                chosen = table[table.material_id.isin(keep)].drop_duplicates("material_id")
                self._cifs.update(zip(chosen.material_id, chosen.cif, strict=True))
        out = {}
        with warnings.catch_warnings():  # CIF round-off notes on symmetric sites
            warnings.simplefilter("ignore", UserWarning)
            for i in ids:
                if i in self._cifs:
                    out[i] = Structure.from_str(self._cifs[i], fmt="cif")
        return out

    def elemental_structure_ids(self) -> dict[str, str]:
        """The MP structure used for each element's reference energy under a potential: the
        elemental reference entry's own material id when its CIF is in the sources, else the
        lowest-formation-energy single-element row of that element; elements with neither are
        left out."""
        index = {i: k for k, i in enumerate(self.ids)}
        best: dict[str, tuple[float, str]] = {}
        for i, formula, e_form in zip(
            self.ids, self.formulas, self.formation_energies, strict=True
        ):
            element = _single_element(formula)
            if element is not None and e_form < best.get(element, (float("inf"), ""))[0]:
                best[element] = (e_form, i)
        out = {}
        for element in self.elemental_energies:
            own = self.elemental_ids.get(element)
            if own in index:
                out[element] = own
            elif element in best:
                out[element] = best[element][1]
        return out


def load_mp_reference(
    root: str | Path | None = None, *, cache: str | Path | None = None
) -> MPReferenceData:
    """Read (or load from the disk cache) the MP reference under ``root``.

    Args:
        root: the data root; the default is :func:`matgen.data.data_root`.
        cache: the cache folder; the default is :func:`matgen.data.root.cache_dir`; an empty
            string disables the disk cache.

    Raises:
        DataError: a source file is missing or has no usable rows.
    """
    root = Path(root) if root is not None else data_root()
    names = [*MP_FORMATION_SOURCES, MP_ELEMENTAL_SOURCE]
    if (root / MP_LABEL_SOURCE).is_file():
        names.append(MP_LABEL_SOURCE)
    for name in names:
        if not (root / name).is_file():
            raise DataError(
                "MP reference source not found; set MATGEN_DATA to the data root",
                path=root / name,
            )
    sources = {name: sha256_file(root / name) for name in names}
    key = hashlib.sha256(json.dumps([_FORMAT, sources], sort_keys=True).encode()).hexdigest()
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"mp_hull_reference_{key[:16]}.json.gz"
    if cache != "" and path.is_file():
        try:
            raw = json.loads(gzip.decompress(path.read_bytes()))
            return MPReferenceData(root=root, **raw)
        except (OSError, ValueError, TypeError):
            pass  # a damaged cache is rebuilt below
    data = _read_sources(root, sources)
    if cache != "":
        folder.mkdir(parents=True, exist_ok=True)
        raw = {k: v for k, v in data.__dict__.items() if k not in ("root", "_cifs")}
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(json.dumps(raw).encode(), compresslevel=6))
        tmp.replace(path)
    return data


def _read_sources(root: Path, sources: dict[str, str]) -> MPReferenceData:
    frames = []
    for k, name in enumerate(MP_FORMATION_SOURCES):
        table = pd.read_csv(
            root / name, usecols=lambda c: c in ("material_id", "formation_energy_per_atom", "cif")
        )
        table = table.dropna(subset=["material_id", "formation_energy_per_atom", "cif"])
        formulas = table.cif.str.extract(_FORMULA_SUM, expand=False)
        if formulas.isna().any():
            row = int(formulas.isna().to_numpy().argmax())
            raise DataError("CIF without _chemical_formula_sum", path=root / name, row=row)
        frames.append(
            pd.DataFrame(
                {
                    "material_id": table.material_id.astype(str),
                    "formula": formulas.str.strip(),
                    "e_form": table.formation_energy_per_atom.astype(float),
                    "source": k,
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True).sort_values(["e_form", "source"], kind="stable")
    rows = rows.drop_duplicates("material_id", keep="first").sort_values("material_id")
    if rows.empty:
        raise DataError("no rows with a formation energy", path=root)
    entries = read_elemental_references(root / MP_ELEMENTAL_SOURCE)
    stable: dict[str, list[str]] = {}
    if MP_LABEL_SOURCE in sources:
        labels = pd.read_csv(
            root / MP_LABEL_SOURCE, usecols=["material_id", "chemsys", "e_above_hull_mp"]
        )
        on_hull = labels[(labels.e_above_hull_mp <= 0) & labels.chemsys.str.contains("-")]
        for chemsys, group in on_hull.groupby("chemsys"):
            stable["-".join(sorted(str(chemsys).split("-")))] = sorted(group.material_id)
    return MPReferenceData(
        root=root,
        ids=rows.material_id.tolist(),
        formulas=rows.formula.tolist(),
        formation_energies=rows.e_form.tolist(),
        source_files=rows.source.astype(int).tolist(),
        elemental_energies={el: float(e.energy_per_atom) for el, e in entries.items()},
        elemental_ids={el: str(e.data.get("material_id", e.entry_id)) for el, e in entries.items()},
        stable_ids=stable,
        sources=sources,
    )


def _single_element(formula: str) -> str | None:
    symbols = {re.sub(r"[\d.]+", "", part) for part in formula.split()}
    return symbols.pop() if len(symbols) == 1 else None
