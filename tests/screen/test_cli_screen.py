"""`matgen screen`: the summary table, the progress bar, unreadable inputs, export-only runs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from matgen.cli import main


def summary(out: str) -> dict[str, str]:
    """The summary table's lines as ``{what: count}``."""
    rows = (re.split(r"\s{2,}", line.strip()) for line in out.splitlines())
    return {row[0]: row[1] for row in rows if len(row) == 2}


def test_screen_command_summarises_and_exports(tiny_potential, mp20_inputs, tmp_path, capsys):
    inputs = mp20_inputs(tmp_path / "candidates.extxyz", range(4))
    (tmp_path / "broken.cif").write_text("not a CIF\n")
    db, table = tmp_path / "results.db", tmp_path / "results.csv"
    args = ["screen", str(inputs), str(tmp_path / "broken.cif"), "--db", str(db)]
    options = ["--potential", str(tiny_potential), "--max-steps", "10", "--reference", "none"]
    options += ["--no-hull"]  # the hull stage relaxes elemental references: tested on its own
    assert main([*args, *options, "--export", str(table)]) == 0
    captured = capsys.readouterr()
    assert "crystal/s" in captured.err  # tqdm's rate
    table_rows = summary(captured.out)
    assert table_rows["rows unreadable"] == "1" and table_rows["relaxed in this run"] == "4"
    assert "wrote 5 rows to" in captured.out
    assert len(pd.read_csv(table)) == 5

    assert main([*args, *options, "--no-progress"]) == 0
    table_rows = summary(capsys.readouterr().out)
    assert table_rows["already in the store (skipped)"] == "5"
    assert table_rows["relaxed in this run"] == "0"

    assert main(["screen", "--db", str(db), "--export", str(tmp_path / "cifs.zip")]) == 0
    assert "wrote 4 rows" in capsys.readouterr().out
    assert main(["screen", "--db", str(db)]) == 2


def test_missing_potential_is_a_clear_error(mp20_inputs, tmp_path, capsys):
    inputs = mp20_inputs(tmp_path / "candidates.extxyz", range(2))
    args = ["screen", str(inputs), "--db", str(tmp_path / "r.db"), "--reference", "none"]
    assert main(args) == 1
    assert "give a potential (--potential)" in capsys.readouterr().err


def test_screen_command_places_candidates_on_the_mp_hull(tiny_potential, mp20_inputs, tmp_path):
    """The default hull stage end to end: the built-in MP reference, the potential's elemental
    energies from its relaxed elemental references, S.U.N. at both thresholds."""
    from matgen.screen.store import ScreeningStore

    inputs = mp20_inputs(tmp_path / "candidates.extxyz", range(3))
    db = tmp_path / "results.db"
    args = ["screen", str(inputs), "--db", str(db), "--potential", str(tiny_potential)]
    args += ["--max-steps", "5", "--reference", "mp_20:test", "--no-progress"]
    assert main(args) == 0
    records = ScreeningStore(db).records()
    assert len(records) == 3
    for r in records.values():
        assert r["covered"] is True
        assert np.isfinite(r["e_above_hull"]) and isinstance(r["decomposition"], str)
        assert r["novel"] is False  # MP-20 test structures, rattled then relaxed, are known
        assert r["sun_0meV"] is False and r["sun_100meV"] is False and r["sun"] is False
        assert r["stable"] == (r["converged"] and r["e_above_hull"] <= 0.1)
