"""Reader for CDVAE-style crystal CSVs (MP-20, MPTS-52, Perov-5, Carbon-24 and the like).

Each row holds a P1 CIF string in a ``cif`` column and any number of property columns. CIFs are
parsed with pymatgen in parallel worker processes, every property column is kept, and the parsed
result is cached as a pickle-free ``.npz`` keyed by the file's sha256, so that a second load reads
only arrays.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from matgen.data.collection import AtomsCollection, BadItem
from matgen.data.convert import structure_to_arrays
from matgen.data.errors import DataError
from matgen.data.integrity import sha256_file, text_stream
from matgen.data.parallel import process_map
from matgen.data.root import cache_dir

__all__ = ["parse_cif", "read_crystal_csv"]

_PARSER_VERSION = 2
_ID_COLUMNS = ("material_id", "id", "name")


def parse_cif(cif: str, *, item: str | None = None) -> tuple[np.ndarray, ...]:
    """Parse one CIF string into ``(numbers, positions, cell, pbc)``.

    The structure is taken as written (``primitive=False``) and its fractional coordinates are
    wrapped into [0, 1).

    Raises:
        DataError: malformed CIF, no atoms, unknown element, disorder, or a degenerate cell.
    """
    from pymatgen.core import Structure

    if not isinstance(cif, str) or not cif.strip():
        raise DataError("empty CIF", item=item)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = Structure.from_str(cif, fmt="cif", primitive=False)
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            lines = str(exc).strip().splitlines()
            reason = lines[0] if lines else type(exc).__name__
            # pymatgen explains the real cause (e.g. "Singular matrix") only in a warning
            details = [
                str(w.message).splitlines()[-1] for w in caught if "parsing CIF" in str(w.message)
            ]
            if details:
                reason += f" ({details[0]})"
            raise DataError(f"malformed CIF: {reason}", item=item) from None
    numbers, _, cell, pbc = structure_to_arrays(structure, item=item)
    frac = np.asarray(structure.frac_coords, dtype=np.float64)
    frac = frac - np.floor(frac)
    frac[frac >= 1.0] -= 1.0
    return numbers, frac @ cell, cell, pbc


def _parse_row(row: tuple[int, str, str]) -> tuple[int, str, object]:
    index, item, cif = row
    try:
        return index, item, parse_cif(cif, item=item)
    except DataError as exc:
        return index, item, exc.reason


def read_crystal_csv(
    path: str | Path,
    *,
    cif_column: str = "cif",
    on_error: str = "raise",
    workers: int | None = None,
    progress: bool = True,
    cache: bool = True,
) -> AtomsCollection:
    """Read a CDVAE-style crystal CSV (optionally gzipped) into an :class:`AtomsCollection`.

    Args:
        path: the CSV file.
        cif_column: column holding the CIF strings.
        on_error: ``"raise"`` stops at the first bad row with a :class:`DataError` naming the file,
            row and id; ``"skip"`` drops bad rows and lists them in ``bad_items``.
        workers: parser processes (default: the CPU count); 1 parses in this process.
        progress: show a progress bar while parsing.
        cache: read and write the processed cache (``$MATGEN_CACHE``).

    Returns:
        The structures, with every column but the CIF in ``properties`` (the unnamed index column
        of pandas-written files is kept as ``index``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    path = Path(path)
    digest = sha256_file(path) if path.is_file() else None
    cached = _cache_path(digest, cif_column) if cache and digest else None
    if cached is not None and cached.is_file():
        collection = AtomsCollection.load(cached)
        _check_bad(collection.bad_items, on_error, path)
        return collection

    table = _read_table(path, cif_column)
    ids = _row_ids(table)
    cifs = table[cif_column].tolist()
    properties = table.drop(columns=[cif_column])
    results = _parse_all(
        list(zip(range(len(cifs)), ids, cifs, strict=True)), workers, progress, path
    )

    systems, keep, bad = [], [], []
    for row, item, result in results:
        if isinstance(result, str):
            bad.append(BadItem(row, item, result))
        else:
            systems.append(result)
            keep.append(row)
    bad.sort(key=lambda b: b.row)
    collection = AtomsCollection.from_systems(systems, properties.iloc[keep], bad_items=bad)
    if cached is not None:
        collection.save(cached)
    _check_bad(bad, on_error, path)
    return collection


def _read_table(path: Path, cif_column: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(text_stream(path), keep_default_na=True)
    except DataError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"not a readable CSV: {exc}", path=path) from None
    if cif_column not in table.columns:
        raise DataError(f"no {cif_column!r} column; columns are {list(table.columns)}", path=path)
    if table.columns[0].startswith("Unnamed: 0") or table.columns[0] == "":
        table = table.rename(columns={table.columns[0]: "index"})
    return table


def _row_ids(table: pd.DataFrame) -> list[str]:
    for column in _ID_COLUMNS:
        if column in table.columns:
            return [str(v) for v in table[column].tolist()]
    return [str(i) for i in range(len(table))]


def _parse_all(
    rows: list[tuple[int, str, str]], workers: int | None, progress: bool, path: Path
) -> list[tuple[int, str, object]]:
    return process_map(
        _parse_row,
        rows,
        workers=workers,
        chunk_size=256,
        progress=progress,
        desc=f"parsing {path.name}",
        unit="cif",
    )


def _check_bad(bad: list[BadItem], on_error: str, path: Path) -> None:
    if bad and on_error == "raise":
        first = bad[0]
        more = (
            f" ({len(bad) - 1} more bad rows; on_error='skip' loads the rest)"
            if len(bad) > 1
            else ""
        )
        raise DataError(first.reason + more, path=path, row=first.row, item=first.item)


def _cache_path(digest: str, cif_column: str) -> Path:
    return cache_dir() / f"crystal_csv-v{_PARSER_VERSION}-{cif_column}-{digest[:32]}.npz"
