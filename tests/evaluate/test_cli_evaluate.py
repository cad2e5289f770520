"""`matgen evaluate` on files, end to end."""

from __future__ import annotations

import json

import ase.io
import numpy as np

from matgen.cli import main


def test_evaluate_crystals_and_csp_commands(mp20_test, tmp_path, capsys):
    folder = tmp_path / "gen"
    folder.mkdir()
    for i in range(12):
        mp20_test.structure(i).to(filename=str(folder / f"g{i:02d}.cif"))
    (folder / "zz_broken.cif").write_text("not a cif")
    out = tmp_path / "report.json"
    assert main(["evaluate", "crystals", str(folder), "--out", str(out), "--workers", "1"]) == 0
    report = json.loads(out.read_text())
    assert report["counts"]["n_samples"] == 13 and report["counts"]["n_built"] == 12
    assert report["metrics"]["struct_valid"] == 12 / 13
    assert any("zz_broken" in bad["item"] for bad in report["invalid"])
    printed = capsys.readouterr()
    assert "struct_valid" in printed.out and "skipped" in printed.err
    assert (
        main(
            [
                "evaluate",
                "csp",
                str(folder),
                "--truth",
                str(folder),
                "--gate",
                "none",
                "--workers",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["metrics"]["match_rate"] == 1.0


def test_evaluate_molecules_command(qm9_test, tmp_path, capsys):
    frames = [qm9_test.atoms(i) for i in range(30)]
    for atoms in frames:
        atoms.info.clear()
    ase.io.write(tmp_path / "mols.xyz", frames, format="extxyz")
    out = tmp_path / "mol.json"
    assert main(["evaluate", "molecules", str(tmp_path / "mols.xyz"), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["atom_stability"] > 0.95 and 0 <= metrics["validity"] <= 1
    assert np.isclose(metrics["uniqueness"], 1.0)
