"""Model directories: safetensors only, sha256 on the card, shipped names."""

from __future__ import annotations

import json

import pytest
import torch

from matgen.generators.lm.checkpoint import (
    is_text_model,
    load_text_lm,
    resolve_model_dir,
    save_text_lm,
    update_card,
)
from matgen.generators.lm.model import PRESETS, build_causal_lm
from matgen.generators.lm.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tokenizer = build_tokenizer("crystal-ctl")
    model = build_causal_lm(
        PRESETS["gpt2-tiny"], len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=2, seed=0
    )
    folder = tmp_path_factory.mktemp("lm") / "model"
    save_text_lm(
        model,
        tokenizer,
        folder,
        kind="crystal",
        form="ctl",
        conditions=["composition"],
        max_atoms=20,
        metadata={"n_train": 5},
    )
    return folder, model, tokenizer


def test_round_trip_gives_identical_logits(saved):
    folder, model, tokenizer = saved
    lm = load_text_lm(folder)
    ids = tokenizer("<bos><comp>Sr1Ti1O3<gen>3.9 3.9 3.9\n", return_tensors="pt")["input_ids"]
    assert torch.equal(lm.model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert lm.kind == "crystal" and lm.form == "ctl" and lm.max_atoms == 20
    assert lm.conditions == ("composition",)
    assert lm.card["metadata"]["n_train"] == 5 and len(lm.card["sha256"]) == 64
    assert is_text_model(folder) and resolve_model_dir(str(folder)) == folder


def test_only_safetensors_and_matching_sha256_load(saved, tmp_path):
    import shutil

    folder, _, _ = saved
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    card = json.loads((copy / "matgen.json").read_text())
    card["sha256"] = "0" * 64
    (copy / "matgen.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="sha256"):
        load_text_lm(copy)
    (copy / "model.safetensors").unlink()
    torch.save({}, copy / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors"):
        load_text_lm(copy)


def test_unknown_names_list_the_shipped_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_text_lm("no-such-model")
    assert not is_text_model(tmp_path)


def test_update_card_merges_evaluation(saved):
    folder, _, _ = saved
    update_card(folder, {"validity": 0.9})
    update_card(folder, {"coverage": 0.5})
    assert load_text_lm(folder).card["evaluation"] == {"validity": 0.9, "coverage": 0.5}


def test_kind_and_form_must_match(saved, tmp_path):
    _, model, tokenizer = saved
    with pytest.raises(ValueError, match="crystal/ctl"):
        save_text_lm(model, tokenizer, tmp_path / "x", kind="crystal", form="selfies")
