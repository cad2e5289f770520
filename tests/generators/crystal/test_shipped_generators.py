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
