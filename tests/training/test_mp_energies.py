"""MP-20 structures as labelled configurations on the MP elemental scale, and the potential
trained on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matgen.data import load_dataset
from matgen.screen.reference import load_mp_reference
from matgen.training.mp_energies import labelled_sample_ids, mp_energy_configurations


@pytest.fixture(scope="module")
def val_configurations(root):
    return mp_energy_configurations("val", root=root, exclude=labelled_sample_ids(root))


def test_energies_are_formation_energies_on_the_mp_elemental_scale(root, val_configurations):
    mu = load_mp_reference(root).elemental_energies
    table = load_dataset("mp_20", "val", root=root, progress=False).properties
    e_form = dict(zip(table.material_id, table.formation_energy_per_atom, strict=True))
    for atoms in val_configurations[::500]:
        symbols = atoms.get_chemical_symbols()
        expected = e_form[atoms.info["material_id"]] + np.mean([mu[s] for s in symbols])
        assert atoms.get_potential_energy() / len(atoms) == pytest.approx(expected, abs=1e-9)
        assert not atoms.get_forces().any() and not atoms.get_stress().any()


def test_the_labelled_sample_and_unlabelled_rows_are_left_out(root, val_configurations):
    held_out = labelled_sample_ids(root)
    table = load_dataset("mp_20", "val", root=root, progress=False).properties
    kept = {atoms.info["material_id"] for atoms in val_configurations}
    assert not kept & held_out
    labelled = set(table.material_id[np.isfinite(table.formation_energy_per_atom)])
    assert kept == labelled - held_out  # every other material with a formation energy


def test_shipped_mp20_potential_matches_its_card(root, tmp_path):
    from ase.io import write

    from matgen.mlff.checkpoint import MODELS_DIR, load_model, shipped_models
    from matgen.mlff.evaluation import evaluate_potential
    from matgen.mlff.statistics import load_configurations

    if "mace-mp20-energies" not in shipped_models():
        pytest.skip("mace-mp20-energies is not shipped")
    card = json.loads((MODELS_DIR / "mace-mp20-energies.json").read_text())
    full = card["test_metrics"]["mp_20:test (MP energies)"]
    model = load_model("mace-mp20-energies")
    known = set(model.config.elements)
    test = mp_energy_configurations("test", root=root, exclude=labelled_sample_ids(root))
    test = [a for a in test if set(a.numbers) <= known]  # as write_mp_energy_sets does
    rng = np.random.default_rng(0)
    write(tmp_path / "subset.extxyz", [test[i] for i in rng.choice(len(test), 200, replace=False)])
    subset = load_configurations({"path": str(tmp_path / "subset.extxyz")})
    report = evaluate_potential(model, subset)
    # 200 of the 8,455 test materials: the card's error level within sampling noise
    assert report["energy_per_atom"]["mae"] == pytest.approx(
        full["energy_per_atom"]["mae"], rel=0.35
    )
