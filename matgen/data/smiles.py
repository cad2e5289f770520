"""Reader for SMILES tables (MOSES, QM9 SMILES): one molecule per row, every other column kept."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from matgen.data.errors import DataError
from matgen.data.integrity import text_stream

__all__ = ["read_smiles_csv"]

_SMILES_COLUMNS = ("smiles", "SMILES", "Smiles")


def read_smiles_csv(path: str | Path, *, column: str | None = None) -> pd.DataFrame:
    """Read a (gzipped) CSV of SMILES; the SMILES column is renamed ``smiles``.

    Args:
        path: the file.
        column: the SMILES column (default: the first of ``smiles``, ``SMILES``, ``Smiles``).

    Raises:
        DataError: naming the file for unreadable CSVs, a missing SMILES column, or an empty or
            missing SMILES (with its row).
    """
    try:
        table = pd.read_csv(text_stream(path), dtype={c: str for c in _SMILES_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"not a readable CSV: {exc}", path=path) from None
    if column is None:
        column = next((c for c in _SMILES_COLUMNS if c in table.columns), None)
    if column is None or column not in table.columns:
        raise DataError(f"no SMILES column; columns are {list(table.columns)}", path=path)
    table = table.rename(columns={column: "smiles"})
    empty = table["smiles"].isna() | (table["smiles"].str.strip() == "")
    if empty.any():
        raise DataError("empty SMILES", path=path, row=int(empty.to_numpy().argmax()))
    return table
