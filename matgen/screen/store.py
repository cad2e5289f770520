"""The screening store: one ASE-database row per candidate, written as each result finishes.

``ase.db.connect`` does the storage: SQLite for a file path (the default), PostgreSQL for a
``postgresql://`` URL (needs ``ase-db-backends`` and ``psycopg2``: ``pip install
'matgen[postgres]'``). Every row holds one candidate's structure (relaxed when it was relaxed,
as read otherwise, empty when unreadable), its total energy as the row's ``energy``, and
key-value pairs:

==================  =====  ===========================================================
key                 type   meaning
==================  =====  ===========================================================
candidate_id        str    stable id (:func:`matgen.screen.identity.structure_id`)
source              str    input file and item
status              str    converged, max_steps, failed, single_point (max_steps 0), invalid,
                           duplicate, unreadable
reduced_formula     str    pymatgen's reduced formula
n_atoms             int    atoms in the cell
valid, unique       bool   validity pre-filter; first of its StructureMatcher group
novel               bool   matches no reference crystal (relaxed structure)
stable, sun         bool   e_above_hull <= threshold (converged or single point only);
                           stable+unique+novel+valid
converged, steps    -      relaxation outcome and FIRE steps taken
max_force           float  largest atomic/cell force at the end, eV/Å
energy_per_atom     float  eV/atom
e_above_hull        float  eV/atom (when a hull stage ran)
potential           str    force-field name or path
checkpoint_sha256   str    sha256 of the checkpoint file
reason              str    why a candidate was not relaxed or a relaxation failed
==================  =====  ===========================================================

Each write is one transaction, so a killed process leaves whole rows only; the set of finished
ids is the set of rows, which is what a rerun skips. The SQLite lock file of ``ase.db`` is turned
off: a process killed while holding it would block every later run, and SQLite locks the file
itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matgen.data.errors import DataError

if TYPE_CHECKING:
    from ase import Atoms
    from ase.db.row import AtomsRow

__all__ = ["ScreeningStore", "key_string"]

ID_KEY = "candidate_id"


def _is_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def _redacted(location: str) -> str:
    """``location`` with any password in a URL replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(location)
    if not _is_url(location) or parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class ScreeningStore:
    """An ASE database of screening results at ``location`` (a file path or a PostgreSQL URL)."""

    def __init__(self, location: str | Path) -> None:
        import ase.db

        self.location = str(location)
        self.name = _redacted(self.location)  # for messages: no password
        if _is_url(self.location):
            try:
                import ase_db_backends.postgresql  # noqa: F401
                import psycopg2  # noqa: F401
            except ImportError as exc:
                raise DataError(
                    f"a PostgreSQL store needs ase-db-backends and psycopg2 ({exc}); "
                    "pip install 'matgen[postgres]'",
                    path=self.name,
                ) from None
            self.db = ase.db.connect(self.location)
            try:
                self.db.count()  # connects, and creates the tables in a new database
            except Exception as exc:  # psycopg2's errors: unreachable server, bad login
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise DataError(
                    f"cannot use the PostgreSQL store: {reason}", path=self.name
                ) from None
        else:
            kind = "json" if self.location.endswith(".json") else "db"
            self.db = ase.db.connect(self.location, type=kind, use_lock_file=False)

    def __len__(self) -> int:
        return self.db.count()

    def finished_ids(self) -> set[str]:
        """Ids of every candidate with a row."""
        return {
            row.key_value_pairs[ID_KEY]
            for row in self.db.select(include_data=False)
            if ID_KEY in row.key_value_pairs
        }

    def write(
        self,
        candidate_id: str,
        atoms: Atoms,
        key_value_pairs: dict[str, Any],
        *,
        energy: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> int:
        """Add one candidate's row in one transaction; returns the row id.

        Non-finite numbers are left out (a missing key reads as unknown).
        """
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = atoms.copy()
        atoms.calc = None
        if energy is not None and math.isfinite(energy):
            atoms.calc = SinglePointCalculator(atoms, energy=float(energy))
        pairs = {ID_KEY: candidate_id}
        for key, value in key_value_pairs.items():
            if isinstance(value, float) and not math.isfinite(value):
                continue
            pairs[key] = key_string(value) if isinstance(value, str) else value
        return self.db.write(atoms, key_value_pairs=pairs, data=data or {})

    def rows(self, *, include_data: bool = False) -> Iterator[AtomsRow]:
        """Every row, in the order written."""
        yield from self.db.select(include_data=include_data, sort="id")

    def records(self) -> dict[str, dict[str, Any]]:
        """Key-value pairs and energy of every row, by candidate id."""
        out = {}
        for row in self.rows():
            record = dict(row.key_value_pairs)
            energy = row.get("energy")
            if energy is not None:
                record["energy"] = float(energy)
            out[record.pop(ID_KEY)] = record
        return out

    def potentials(self) -> set[tuple[str, str]]:
        """The ``(potential, checkpoint_sha256)`` pairs of the relaxed rows."""
        return {
            (row.key_value_pairs["potential"], row.key_value_pairs.get("checkpoint_sha256", ""))
            for row in self.db.select("potential", include_data=False)
        }


def key_string(value: str) -> str:
    """``value`` as an ASE key-value string: ASE refuses strings that read as numbers or
    booleans (``"42"``, ``"1e5"``, ``"True"``), which are prefixed with ``#``."""
    from ase.db.core import str_represents

    if any(str_represents(value, t) for t in (bool, int, float)):
        return "#" + value
    return value
