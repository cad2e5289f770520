"""Exports of a screening store: extxyz, a zip of CIFs, CSV or Parquet.

- ``.extxyz`` / ``.xyz``: every row with atoms, its key-value pairs in the frame's info and its
  energy as the frame's energy;
- ``.zip``: one ``CANDIDATE_ID.cif`` per row with atoms (relaxed structures where relaxed);
- ``.csv`` / ``.parquet``: one line per row, the key-value pairs and the energy as columns
  (Parquet needs pyarrow).

Unreadable inputs (rows without atoms) appear in the tables only.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from matgen.data.errors import DataError
from matgen.screen.store import ID_KEY, ScreeningStore

__all__ = ["EXPORT_FORMATS", "export_store"]

EXPORT_FORMATS = (".extxyz", ".xyz", ".zip", ".csv", ".parquet")


def export_store(store: ScreeningStore, path: str | Path) -> int:
    """Write ``store`` to ``path`` in the format its suffix names; returns the items written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise DataError(
            f"unknown export format {suffix!r}: use one of {', '.join(EXPORT_FORMATS)}", path=path
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".csv", ".parquet"):
        return _export_table(store, path)
    frames = []
    for row in store.rows():
        if row.natoms == 0:
            continue
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        frames.append(atoms)
    if suffix == ".zip":
        _export_cifs(frames, path)
    else:
        import ase.io

        ase.io.write(path, frames, format="extxyz")
    return len(frames)


def _export_cifs(frames: list, path: Path) -> None:
    import ase.io

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for atoms in frames:
            text = io.BytesIO()
            plain = atoms.copy()
            plain.info = {}
            ase.io.write(text, plain, format="cif")
            archive.writestr(f"{atoms.info[ID_KEY]}.cif", text.getvalue())


def _export_table(store: ScreeningStore, path: Path) -> int:
    import pandas as pd

    records = store.records()
    table = pd.DataFrame([{ID_KEY: key, **record} for key, record in records.items()])
    if path.suffix.lower() == ".csv":
        table.to_csv(path, index=False)
    else:
        try:
            table.to_parquet(path, index=False)
        except ImportError as exc:
            raise DataError(
                f"Parquet export needs pyarrow ({exc}): pip install pyarrow, or export to .csv",
                path=path,
            ) from None
    return len(table)
