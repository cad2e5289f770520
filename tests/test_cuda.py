"""Every model on CUDA gives what it gives on the CPU: the force field (built, imported from
mace-torch and shipped), its neighbour lists, the ASE calculator, the batched relaxer and a
training run. Skipped where no CUDA device is present (CI has none; run it on a GPU machine with
``pytest tests/test_cuda.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import read, write

from matgen.data import AtomsBatch
from matgen.mlff.checkpoint import load_model
from matgen.mlff.config import preset
from matgen.mlff.mace import MACE
from matgen.mlff.mace_import import model_from_mace_export

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

FIXTURES = Path(__file__).parent / "fixtures" / "mace"
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def frames():
    """Si, NaCl, a SiO2 cell and a free H2O molecule: periodic and non-periodic in one batch."""
    return read(FIXTURES / "structures.extxyz", index=":")


def _outputs(model, frames, device, dtype):
    model = model.to(device=device, dtype=dtype)
    out = model(AtomsBatch.from_atoms(frames, dtype=dtype, device=device))
    return {k: out[k].detach().cpu().double().numpy() for k in ("energy", "forces", "stress")}


def _assert_close(a, b, rtol):
    for key in ("energy", "forces", "stress"):
        scale = max(np.abs(a[key]).max(), 1e-12)
        assert np.abs(a[key] - b[key]).max() <= rtol * scale, key


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_mace_on_cuda_equals_cpu(frames, dtype, rtol):
    elements = sorted({int(z) for a in frames for z in a.numbers})
    torch.manual_seed(0)
    model = MACE(preset("cpu-small", elements=tuple(elements), avg_num_neighbors=10.0)).eval()
    cpu = _outputs(model, frames, "cpu", torch.float64)
    gpu = _outputs(model, frames, CUDA, dtype)
    assert np.abs(cpu["forces"]).max() > 1e-3
    _assert_close(cpu, gpu, rtol)


@pytest.mark.parametrize("device_above", [0, 5000])  # vesin-torch on the GPU, vesin on the host
def test_neighbor_lists_on_cuda_equal_cpu(frames, device_above, monkeypatch):
    monkeypatch.setattr("matgen.data.batch.DEVICE_NEIGHBORS_ABOVE", device_above)
    cpu = AtomsBatch.from_atoms(frames).with_neighbors(4.5)
    gpu = AtomsBatch.from_atoms(frames, device=CUDA).with_neighbors(4.5)
    assert gpu.edge_index.device.type == "cuda"

    def edges(b):
        rows = torch.cat([b.edge_index.T, b.shifts.long()], dim=1).cpu().numpy()
        return sorted(map(tuple, rows))

    assert edges(cpu) == edges(gpu) and len(edges(cpu)) > 0


def test_imported_mace_torch_model_on_cuda(frames):
    """The tiny mace-torch export reproduces mace-torch's own float64 numbers on the GPU too."""
    ref = np.load(FIXTURES / "tiny_reference.npz")
    out = _outputs(model_from_mace_export(FIXTURES / "tiny_export.pt"), frames, CUDA, torch.float64)
    assert np.abs((out["energy"] - ref["energy"]) / ref["n_atoms"]).max() < 1e-10
    assert np.abs(out["forces"] - ref["forces"]).max() < 1e-9


def test_calculator_and_batched_relaxer_on_cuda():
    from matgen import MatgenCalculator
    from matgen.relax import relax_batched

    rng = np.random.default_rng(0)
    structures = []
    for k in range(4):
        atoms = bulk("Si", "diamond", a=5.43, cubic=bool(k % 2))
        atoms.rattle(0.1, seed=k)
        atoms.set_cell(
            atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True
        )
        structures.append(atoms)
    probe = structures[1].copy()
    probe.calc = MatgenCalculator.from_checkpoint("mace-mlearn-si", device="cuda")
    reference = structures[1].copy()
    reference.calc = MatgenCalculator.from_checkpoint("mace-mlearn-si")
    assert probe.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(probe.get_stress(), reference.get_stress(), atol=1e-10)

    model = load_model("mace-mlearn-si")
    on_cpu = relax_batched(model, structures, fmax=0.02, max_steps=200, max_atoms=16)
    on_gpu = relax_batched(model, structures, fmax=0.02, max_steps=200, max_atoms=16, device="cuda")
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert a.converged and b.converged
        assert a.steps == b.steps
        assert a.energy == pytest.approx(b.energy, abs=1e-7)
        np.testing.assert_allclose(a.atoms.cell.array, b.atoms.cell.array, atol=1e-6)


def test_training_on_cuda(tmp_path, root):
    from matgen.data import load_dataset
    from matgen.training.mlff_train import train_mlff

    data = load_dataset("ethanol", "train")
    train = tmp_path / "ethanol24.extxyz"
    write(train, [data.atoms(i) for i in range(24)], format="extxyz")
    config = {
        "model": {
            "preset": "cpu-small",
            "overrides": {"hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "radial_mlp": [16]},
        },
        "data": {
            "train": {"path": str(train)},
            "val_fraction": 0.25,
            "atomic_energies": {"dataset": "ethanol", "split": "isolated_atoms"},
            "test": [{"path": str(train), "name": "train24"}],
            "batch_size": 4,
        },
        "training": {
            "max_epochs": 2,
            "dtype": "float32",
            "seed": 1,
            "accelerator": "gpu",
            "weights": {"energy": 1.0, "forces": 10.0},
            "optim": {"lr": 0.01, "stage_two_fraction": 0.5},
        },
        "output": {"dir": str(tmp_path / "run"), "checkpoint": str(tmp_path / "model.pt")},
    }
    path = train_mlff(config, log=lambda *_: None)
    card = json.loads(path.with_suffix(".json").read_text())
    assert np.isfinite(card["test_metrics"]["train24"]["forces"]["mae"])
    assert load_model(path).config.elements == (1, 6, 8)
