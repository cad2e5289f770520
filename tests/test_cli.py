"""The `matgen` command line: data list / info / fetch, and the launcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from matgen.cli import main
from matgen.data import CATALOG

ROOT = Path(__file__).resolve().parents[1]


def test_data_list_shows_every_set_present(root, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"data root: {root}" in out
    for spec in CATALOG:
        line = next(line for line in out.splitlines() if line.startswith(spec.name + " "))
        assert " yes " in line, line
    assert "train 20,320, val 9,047, test 9,046" in out


def test_data_info_verifies_and_counts(root, capsys):
    assert main(["data", "info", "perov_5", "--count"]) == 0
    out = capsys.readouterr().out
    assert "perov_5/val.csv.gz" in out and "3,787" in out and "ok" in out
    assert "https://github.com/txie-93/cdvae" in out
    rows = [
        line.split() for line in out.splitlines() if line.startswith(("train ", "val ", "test "))
    ]
    assert all(r[2] == r[3] for r in rows), rows  # registered rows == counted rows


def test_data_info_reports_missing_files(tmp_path, capsys):
    assert main(["data", "info", "carbon_24", "--root", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().out


def test_unknown_set_is_a_clear_error(capsys):
    assert main(["data", "info", "mp_21"]) == 1
    assert "no data set called 'mp_21'" in capsys.readouterr().err


def test_fetch_command_copies_from_mirror(root, tmp_path, capsys):
    assert main(["data", "fetch", "mlearn_Ni", "--from", str(root), "--root", str(tmp_path)]) == 0
    assert (tmp_path / "mlff/mlearn/Ni_test.extxyz.gz").is_file()


def test_launcher_and_console_script_agree():
    launcher = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "--version"], capture_output=True, text=True
    )
    assert launcher.returncode == 0 and launcher.stdout.startswith("matgen ")
    script = Path(sys.executable).with_name("matgen")
    if script.exists():
        console = subprocess.run([str(script), "--version"], capture_output=True, text=True)
        assert console.stdout == launcher.stdout
