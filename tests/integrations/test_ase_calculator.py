"""MatgenCalculator: ASE's contract, finite differences through ASE's own helpers, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from matgen import MatgenCalculator
from matgen.data import DataError
from matgen.mlff.checkpoint import load_model, read_checkpoint, save_model
from tests.mlff.conftest import ethanol, model, mp20_atoms  # noqa: F401  (fixtures)


def test_forces_and_stress_equal_finite_differences_on_mp20(model, mp20_atoms):  # noqa: F811
    calc = MatgenCalculator(model)
    for atoms in mp20_atoms[:3]:
        atoms = atoms.copy()
        atoms.calc = calc
        forces = atoms.get_forces()
        numeric = calculate_numerical_forces(atoms, eps=1e-4)
        np.testing.assert_allclose(forces, numeric, atol=1e-6)
        stress = atoms.get_stress()
        assert stress.shape == (6,)
        np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-6)
        assert atoms.get_potential_energy() == atoms.calc.results["free_energy"]


def test_molecule_forces_and_no_stress(model, ethanol):  # noqa: F811
    atoms = ethanol.copy()
    atoms.calc = MatgenCalculator(model)
    np.testing.assert_allclose(
        atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-4), atol=1e-6
    )
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_checkpoint_round_trip_loads_weights_only(model, mp20_atoms, tmp_path):  # noqa: F811
    path = save_model(model, tmp_path / "m.pt", metadata={"note": "test"})
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["format"] == read_checkpoint(path)["format"]
    calc = MatgenCalculator.from_checkpoint(path, dtype=torch.float64)
    assert calc.model.metadata["note"] == "test" and len(calc.model.metadata["sha256"]) == 64
    a, b = mp20_atoms[3].copy(), mp20_atoms[3].copy()
    a.calc, b.calc = calc, MatgenCalculator(model)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-12)
    single = MatgenCalculator.from_checkpoint(path, dtype=torch.float32)
    a.calc = single
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-5)


def test_unknown_element_and_bad_checkpoints_are_explained(model, mp20_atoms, tmp_path):  # noqa: F811
    atoms = mp20_atoms[0].copy()
    atoms.numbers[:] = 79
    atoms.calc = MatgenCalculator(model)
    with pytest.raises(DataError, match="element Au is not supported"):
        atoms.get_potential_energy()
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(ValueError, match="not a matgen MLFF checkpoint"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="neither a shipped model"):
        load_model("no-such-model")


def test_discoverable_through_ase_plugins():
    plugins = pytest.importorskip("ase._4.plugins")
    names = [p.name for p in plugins.PluginCollection.from_entry_points().calculators]
    assert "matgen" in names
