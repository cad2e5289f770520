"""The crystal generators that ship: weights-only, small, with a data card that names their
training and carries the evaluation numbers quoted in the README."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from matgen.generators.crystal.checkpoint import (
    MODELS_DIR,
    load_crystal_diffusion,
    shipped_crystal_models,
)


@pytest.mark.parametrize("name", shipped_crystal_models())
def test_shipped_generator_has_a_true_data_card(name):
    path = MODELS_DIR / f"{name}.pt"
    assert path.stat().st_size <= 25 * 2**20
    payload = torch.load(path, weights_only=True)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for key in ("training_config", "training_data", "n_train", "epochs", "steps", "device"):
        assert key in card, key
    assert card["evaluation"], "a shipped generator carries the evaluation suite's numbers"
    model = load_crystal_diffusion(name)
    assert list(model.elements) == payload["config"]["denoiser"]["elements"]
    out = model.sample_tensors(torch.tensor([4]), steps=2, generator=torch.Generator())
    assert torch.isfinite(out.lattice).all()


@pytest.mark.slow
def test_shipped_formation_energy_model_moves_the_predicted_property(root):
    """Targets of -3 and 0 eV/atom: the project's MP-energy potential puts the median formation
    energy of the first set well below that of the second (measured: about -2.2 against -0.3 on
    128 samples each; ``benchmarks/bench_property_conditioning.py``)."""
    import numpy as np
    from pymatgen.io.ase import AseAtomsAdaptor

    import matgen
    from matgen.evaluate.crystal.validity import structure_validity
    from matgen.mlff.checkpoint import load_model
    from matgen.relax.fire import relax_batched
    from matgen.screen.formation import formation_energy_per_atom
    from matgen.screen.reference import load_mp_reference

    torch.set_num_threads(1)
    generator = matgen.load("crystal-diffusion-mp20-eform", steps=100)
    predictor = load_model("mace-mp20-energies", dtype=torch.float64)
    allowed = set(predictor.config.symbols)
    mu = load_mp_reference().elemental_energies
    medians = {}
    for target in (-3.0, 0.0):
        samples = generator.sample(
            48, properties={"formation_energy_per_atom": target}, guidance=2.0, seed=1
        )
        usable = [
            s
            for s in samples
            if structure_validity(s) and {el.symbol for el in s.composition.elements} <= allowed
        ]
        assert len(usable) >= 24, f"target {target}: only {len(usable)} usable samples"
        results = relax_batched(
            predictor,
            [AseAtomsAdaptor.get_atoms(s) for s in usable],
            max_steps=0,
            dtype=torch.float64,
        )
        values = [
            formation_energy_per_atom(s.composition, r.energy / len(s), mu)
            for s, r in zip(usable, results, strict=True)
            if r.status != "failed"
        ]
        medians[target] = float(np.median(values))
    assert medians[-3.0] < medians[0.0] - 0.8, medians
