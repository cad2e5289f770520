"""The checkpoints that ship: weights-only, small, with a data card whose numbers hold."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from matgen.cli import main
from matgen.data import load_dataset
from matgen.mlff.checkpoint import MODELS_DIR, load_model, shipped_models
from matgen.mlff.evaluation import evaluate_potential


@pytest.mark.parametrize("name", shipped_models())
def test_shipped_model_has_a_true_data_card(name):
    path = MODELS_DIR / f"{name}.pt"
    assert path.stat().st_size <= 25 * 2**20
    torch.load(path, weights_only=True)  # plain data only
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for key in ("training_config", "training_data", "statistics", "test_metrics", "epochs"):
        assert key in card
    model = load_model(name)
    assert list(model.config.elements) == card["statistics"]["elements"]


def test_ethanol_model_errors_match_its_card(root):
    if "mace-ethanol-rmd17" not in shipped_models():
        pytest.skip("mace-ethanol-rmd17 is not shipped")
    card = json.loads((MODELS_DIR / "mace-ethanol-rmd17.json").read_text())
    full = card["test_metrics"]["ethanol:test_MD"]
    test = load_dataset("ethanol", "test_MD")
    test.collection = test.collection.subset(range(100))
    report = evaluate_potential(load_model("mace-ethanol-rmd17"), test)
    # 100 of the 1,000 frames: the same error level as the whole set
    assert report["forces"]["mae"] == pytest.approx(full["forces"]["mae"], rel=0.3)
    assert report["energy"]["mae"] < 3 * full["energy"]["mae"] + 0.5


def test_models_command_lists_them(capsys):
    assert main(["mlff", "models"]) == 0
    out = capsys.readouterr().out
    for name in shipped_models():
        assert name in out
