"""Readers for the Materials Project reference files: elemental reference entries and
energy-above-hull labels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from matgen.data.errors import DataError
from matgen.data.integrity import read_bytes, text_stream

if TYPE_CHECKING:
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = ["read_ehull_labels", "read_elemental_references"]


def read_elemental_references(path: str | Path) -> dict[str, ComputedEntry]:
    """Read ``{element: ComputedEntry.as_dict()}`` JSON (gzipped or not) into entries."""
    from pymatgen.entries.computed_entries import ComputedEntry

    try:
        raw = json.loads(read_bytes(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc}", path=path) from None
    if not isinstance(raw, dict):
        raise DataError("expected a JSON object {element: entry}", path=path)
    entries = {}
    for element, entry in raw.items():
        try:
            with warnings.catch_warnings():  # pymatgen warns about noble-gas electronegativity
                warnings.simplefilter("ignore", UserWarning)
                entries[element] = ComputedEntry.from_dict(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad ComputedEntry: {exc}", path=path, item=element) from None
    return entries


def read_ehull_labels(path: str | Path) -> pd.DataFrame:
    """Read the MP energy-above-hull label table (one row per MP id)."""
    table = pd.read_csv(text_stream(path))
    needed = {"material_id", "e_above_hull_mp"}
    if not needed <= set(table.columns):
        raise DataError(
            f"expected columns {sorted(needed)}; found {list(table.columns)}", path=path
        )
    return table
