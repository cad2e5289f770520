"""mace-torch models in matgen: a real mace-torch export (a tiny random model made by this
project, tests/fixtures/mace) gives mace-torch's own energies, forces and stresses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

from matgen import MatgenCalculator
from matgen.cli import main
from matgen.data import AtomsBatch, load_dataset
from matgen.mlff.mace_import import model_from_mace_export

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mace"
EXPORTER = Path(__file__).parents[2] / "matgen" / "mlff" / "exporters" / "mace_export.py"


def _compare(model, frames, ref, *, atol_e, atol_f, atol_s):
    out = model(AtomsBatch.from_atoms(frames))
    per_atom = (out["energy"].numpy() - ref["energy"]) / ref["n_atoms"]
    assert np.abs(per_atom).max() < atol_e
    assert np.abs(out["forces"].numpy() - ref["forces"]).max() < atol_f
    periodic = [a.pbc.any() for a in frames]
    assert np.abs(out["stress"].numpy()[periodic] - ref["stress"][periodic]).max() < atol_s
    assert np.abs(ref["forces"]).max() > 1e-3  # the comparison is not of zeros


def test_tiny_mace_torch_model_reproduced():
    frames = read(FIXTURES / "structures.extxyz", index=":")
    ref = np.load(FIXTURES / "tiny_reference.npz")
    model = model_from_mace_export(FIXTURES / "tiny_export.pt")
    assert model.config.first_interaction == "element" and model.config.correlation == (3, 3)
    _compare(model, frames, ref, atol_e=1e-10, atol_f=1e-9, atol_s=1e-10)


def test_import_cli_writes_a_calculator_checkpoint(tmp_path):
    out = tmp_path / "tiny.pt"
    assert main(["mlff", "import-mace", str(FIXTURES / "tiny_export.pt"), str(out)]) == 0
    frames = read(FIXTURES / "structures.extxyz", index=":")
    ref = np.load(FIXTURES / "tiny_reference.npz")
    atoms = frames[0]
    atoms.calc = MatgenCalculator.from_checkpoint(out)
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"][0], abs=1e-9)
    assert atoms.calc.model.metadata["source"] == "mace-torch"


def test_not_an_export_is_refused(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match=r"not a mace_export\.py file"):
        model_from_mace_export(bad)


@pytest.mark.slow
def test_mp0_medium_parity_with_mace_torch(tmp_path, root):
    """Issue 4's parity check, in a slow test: a random mace-torch model with the MACE-MP-0
    medium hyperparameters, exported and imported, against mace-torch itself in float64 on 20
    MP-20 test structures (rattled by 0.03 Å). Needs MATGEN_MACE_PYTHON, the python of an
    environment with mace-torch (benchmarks/mace_peer_env.sh builds one)."""
    python = os.environ.get("MATGEN_MACE_PYTHON")
    if not python:
        pytest.skip("set MATGEN_MACE_PYTHON to a python with mace-torch")
    from ase.io import write

    data = load_dataset("mp_20", "test", progress=False)
    frames = []
    for i in range(20):
        a = data.atoms(i)
        a.calc = None
        a.rattle(0.03, seed=i)
        frames.append(a)
    write(tmp_path / "s.extxyz", frames, format="extxyz")
    subprocess.run(
        [
            python,
            str(EXPORTER),
            "--random-mp0-medium",
            str(tmp_path / "e.pt"),
            "--seed",
            "0",
            "--eval",
            str(tmp_path / "s.extxyz"),
            str(tmp_path / "ref.npz"),
        ],
        check=True,
    )
    model = model_from_mace_export(tmp_path / "e.pt")
    ref = np.load(tmp_path / "ref.npz")
    _compare(model, frames, ref, atol_e=1e-6, atol_f=1e-6, atol_s=1e-6)
