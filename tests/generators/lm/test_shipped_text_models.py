"""The text generators that ship: safetensors weights within the size limit, a data card whose
sha256 matches and which names the training data and carries the evaluation numbers quoted in
the README, and samples that decode."""

from __future__ import annotations

import hashlib
import json

import pytest

from matgen.generators.lm.checkpoint import MODELS_DIR, shipped_text_models
from matgen.generators.lm.generator import load_text_generator


@pytest.mark.parametrize("name", shipped_text_models())
def test_shipped_text_model_has_a_true_data_card(name):
    directory = MODELS_DIR / name
    weights = directory / "model.safetensors"
    assert sum(p.stat().st_size for p in directory.iterdir()) <= 25 * 2**20
    card = json.loads((directory / "matgen.json").read_text())
    assert card["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    metadata = card["metadata"]
    for key in ("training_config", "training_data", "parameters", "steps", "device"):
        assert key in metadata, key
    assert card["evaluation"], "a shipped generator carries the evaluation suite's numbers"
    generator = load_text_generator(name, chunk=8)
    samples = generator.sample(8, seed=0)
    assert len(samples) == 8 and not generator.report.failures
    if card["kind"] == "crystal":
        allowed = set(card["elements"])
        assert all({el.symbol for el in s.composition} <= allowed for s in samples)
    else:
        assert all(mol.GetNumAtoms() > 0 for mol in samples)
