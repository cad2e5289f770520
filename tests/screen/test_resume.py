"""A `matgen screen` killed with SIGKILL mid-run and rerun loses no finished row, duplicates none,
and ends with the store of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from matgen.screen.store import ScreeningStore

CLI_ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

FLAGS = ("status", "valid", "unique", "novel", "converged", "steps", "reduced_formula", "source")


def cli_command(*args: str) -> list[str]:
    """``matgen ARGS`` as a command for a fresh interpreter."""
    return [
        sys.executable,
        "-c",
        "import sys; from matgen.cli import main; sys.exit(main())",
        *args,
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``matgen ARGS`` with one thread; fail on a nonzero exit."""
    result = subprocess.run(
        cli_command(*args), capture_output=True, text=True, env=CLI_ENV, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _rows(path) -> list[tuple]:
    """Every committed row as (row id, candidate id, energy, key-value text), read with sqlite3
    (a reader never blocks the writer for long)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(
                "SELECT id, key_value_pairs, energy FROM systems ORDER BY id"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or being created
        return []


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tiny_potential, mp20_inputs, tmp_path):
    inputs = mp20_inputs(tmp_path / "candidates.extxyz", range(12))
    # one structure in flight at a time and steps enough for rows to finish a fraction of a
    # second apart, so that the kill lands mid-run
    args = [
        "screen",
        str(inputs),
        "--potential",
        str(tiny_potential),
        "--fmax",
        "0.01",
        "--max-steps",
        "100",
        "--max-atoms",
        "1",
        "--no-hull",
        "--no-progress",
    ]
    killed = tmp_path / "killed.db"
    process = subprocess.Popen(
        cli_command(*args, "--db", str(killed)),
        env=CLI_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None and len(_rows(killed)) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{stderr}"
    before = _rows(killed)
    assert 3 <= len(before) < 12, f"{len(before)} rows at the kill"

    run_cli(*args, "--db", str(killed))
    after = _rows(killed)
    assert len(after) == 12 and len(ScreeningStore(killed).finished_ids()) == 12  # no duplicates
    assert after[: len(before)] == before  # finished rows untouched

    fresh = tmp_path / "fresh.db"
    run_cli(*args, "--db", str(fresh))
    resumed, uninterrupted = ScreeningStore(killed).records(), ScreeningStore(fresh).records()
    assert resumed.keys() == uninterrupted.keys()
    for key, expected in uninterrupted.items():
        got = resumed[key]
        assert {f: got.get(f) for f in FLAGS} == {f: expected.get(f) for f in FLAGS}, key
        assert np.isclose(got["energy"], expected["energy"], rtol=0, atol=1e-6), key
