"""Training the text generators: examples re-drawn each epoch, length buckets, the loss on real
MP-20 text falls, resume from last.ckpt, malformed SMILES counted, and a fast_dev_run of every
config in configs/lm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from matgen.training.lm_data import (
    CrystalExamples,
    LengthBucketSampler,
    MoleculeExamples,
    TokenizedExamples,
    collate_examples,
)
from matgen.training.lm_train import build_sources, load_config, train_text_lm

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "lm").glob("*.yaml"))


@pytest.fixture(scope="module")
def mp20_examples(mp20_test):
    from matgen.generators.lm.prompts import properties_from_row

    rows = mp20_test.collection.properties.to_dict("records")[:48]
    structures = [mp20_test.collection.structure(i) for i in range(48)]
    return CrystalExamples(structures, [properties_from_row(r) for r in rows])


@pytest.fixture(scope="module")
def ctl_tokenizer():
    from matgen.generators.lm.tokenizer import build_tokenizer

    return build_tokenizer("crystal-ctl")


def test_examples_are_redrawn_each_epoch(mp20_examples, ctl_tokenizer):
    data = TokenizedExamples(mp20_examples, ctl_tokenizer, seed=0)
    first = [data[i].copy() for i in range(len(data))]
    data.draw(1)
    assert sum(not np.array_equal(a, data[i]) for i, a in enumerate(first)) > 40
    data.draw(0)  # the same epoch draws the same examples
    assert all(np.array_equal(a, data[i]) for i, a in enumerate(first))
    fixed = TokenizedExamples(mp20_examples, ctl_tokenizer, seed=0, redraw=False)
    before = fixed[0].copy()
    fixed.draw(3)
    assert np.array_equal(before, fixed[0])
    texts = [ctl_tokenizer.decode(data[i]) for i in range(len(data))]
    assert all(t.startswith("<bos>") and t.endswith("<eos>") for t in texts)
    assert any("<infill>" in t for t in texts) or mp20_examples.infill_fraction == 0


def test_length_buckets_waste_little_padding(mp20_examples, ctl_tokenizer):
    data = TokenizedExamples(mp20_examples, ctl_tokenizer, seed=0)
    sampler = LengthBucketSampler(data, 8, seed=0)
    batches = sampler.batches()
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(data)))
    lengths = data.lengths
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.15  # a random order pads ~1.5x on MP-20
    assert list(sampler) == np.concatenate(batches).tolist()
    sampler.set_epoch(1)
    assert data.epoch == 1


def test_collate_masks_prompt_and_padding():
    batch = collate_examples(
        [np.array([1, 6, 9, 4, 20, 21, 2]), np.array([1, 4, 30, 2])], pad_id=0, gen_id=4
    )
    assert batch["input_ids"].shape == (2, 7)
    assert batch["labels"][0].tolist() == [-100, -100, -100, -100, 20, 21, 2]
    assert batch["labels"][1].tolist() == [-100, -100, 30, 2, -100, -100, -100]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0]


def test_collate_with_prompt_loss_learns_the_prompt_but_not_infill_bodies():
    # <bos>=1 <gen>=4 <infill>=11; prompt tokens 6, 9 (a <comp> field), body 20 21, <eos>=2
    examples = [np.array([1, 6, 9, 4, 20, 21, 2]), np.array([1, 11, 30, 31, 4, 40, 2])]
    batch = collate_examples(examples, pad_id=0, gen_id=4, prompt_loss=True, infill_id=11)
    assert batch["labels"][0].tolist() == [-100, 6, 9, 4, 20, 21, 2]
    assert batch["labels"][1].tolist() == [-100, -100, -100, -100, -100, 40, 2]
    plain = collate_examples(examples, pad_id=0, gen_id=4)
    assert plain["labels"][0].tolist() == [-100, -100, -100, -100, 20, 21, 2]


def test_loss_falls_on_real_mp20_text(mp20_examples, ctl_tokenizer):
    from matgen.generators.lm.model import build_causal_lm, preset

    torch.manual_seed(0)
    data = TokenizedExamples(mp20_examples, ctl_tokenizer, seed=0)
    model = build_causal_lm(
        preset("gpt2-tiny", n_embd=64),
        len(ctl_tokenizer),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        seed=0,
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    held_out = collate_examples([data[i] for i in range(40, 48)], pad_id=0, gen_id=4)

    def loss() -> float:
        with torch.no_grad():
            return model(**held_out).loss.item()

    start = loss()
    for epoch in range(3):
        data.draw(epoch)
        for batch in LengthBucketSampler(data, 8, seed=epoch).batches():
            batch = [i for i in batch.tolist() if i < 40]
            if batch:
                step = model(**collate_examples([data[i] for i in batch], pad_id=0, gen_id=4))
                step.loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    assert loss() < start - 1.0  # from ~ln(144) = 5 nats to well under 4 on unseen crystals


def _tiny_crystal_config(folder: Path, **training) -> dict:
    return {
        "model": {"preset": "gpt2-tiny"},
        "data": {
            "kind": "crystal",
            "form": "ctl",
            "train": [{"dataset": "perov_5", "split": "train"}],
            "val_fraction": 0.05,
            "max_train": 64,
            "max_val": 16,
            "conditions": ["composition", "spacegroup"],
            "batch_size": 16,
        },
        "training": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "warmup_steps": 2,
            "val_every_steps": 4,
            "checkpoint_every_steps": 2,
            **training,
        },
        "output": {"dir": str(folder / "run"), "model_dir": str(folder / "model")},
    }


def test_train_exports_a_model_dir_with_its_card_and_resumes(root, tmp_path):
    from matgen.generators.lm.checkpoint import load_text_lm

    config = _tiny_crystal_config(tmp_path)
    target = train_text_lm(config, log=lambda *_: None)
    lm = load_text_lm(target)
    card = lm.card
    assert card["kind"] == "crystal" and card["form"] == "ctl"
    assert card["conditions"] == ["composition", "spacegroup"] and card["max_atoms"] == 5
    assert "O" in card["elements"] and len(card["elements"]) > 10
    meta = card["metadata"]
    assert meta["n_train"] == 64 and meta["n_val"] == 16 and meta["steps"] == 4
    assert meta["export"]["selected"] == "best validation loss"
    assert meta["training_data"]["train"][0]["sha256"] and meta["wall_time_s"] > 0
    assert meta["parameters"] > 0 and meta["training_config"]["model"]["preset"] == "gpt2-tiny"
    assert meta["site_order"] == "given"
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    config["training"]["max_epochs"] = 2
    train_text_lm(config, log=lambda *_: None)
    assert load_text_lm(target).card["metadata"]["steps"] == 8  # resumed at step 4, not 0


@pytest.mark.parametrize("base", ["matgen", "foreign"])
def test_lora_fine_tuning_from_a_local_model_exports_merged_weights(base, root, tmp_path):
    from matgen.generators.lm.checkpoint import load_text_lm
    from matgen.generators.lm.model import build_causal_lm, preset

    if base == "matgen":  # a matgen text model: its tokenizer is kept
        init = train_text_lm(_tiny_crystal_config(tmp_path / "base"), log=lambda *_: None)
    else:  # any transformers causal LM: new vocabulary, resized and fully trained embeddings
        init = tmp_path / "foreign"
        model = build_causal_lm(
            preset("llama-small", n_layer=1, n_embd=32, n_head=2, intermediate_size=64),
            vocab_size=50,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            seed=0,
        )
        model.save_pretrained(init)
    config = _tiny_crystal_config(tmp_path / "tuned", ema_decay=0.9)
    config["model"] = {"init_from": str(init), "lora": {"r": 2, "alpha": 4, "dropout": 0.0}}
    lm = load_text_lm(train_text_lm(config, log=lambda *_: None))
    assert not any("lora" in name for name, _ in lm.model.named_parameters())
    assert lm.model.get_input_embeddings().num_embeddings == len(lm.tokenizer) == 144
    assert lm.card["metadata"]["model"]["lora"]["r"] == 2


def test_malformed_smiles_are_skipped_and_counted(monkeypatch):
    import matgen.training.lm_train as lm_train

    smiles = ["CCO", "c1ccccc1", "C1CC", "not a molecule", "CC(=O)O", "N#N", "CCN", "CCC"] * 4
    monkeypatch.setattr(lm_train, "_molecule_rows", lambda sources: list(smiles))
    config = {
        "data": {"kind": "molecule", "form": "selfies", "train": [], "val_fraction": 0.25},
        "training": {"seed": 0},
    }
    sources = build_sources(config, log=lambda *_: None)
    info = sources["info"]
    assert info["n_train"] + info["n_val"] + info["n_skipped_malformed"] == len(smiles)
    assert info["n_skipped_malformed"] == 8
    assert isinstance(sources["train"], MoleculeExamples)
    assert all(b.startswith("[") for b in sources["corpus"])


def test_held_out_rows_follow_the_split_seed_not_the_training_seed(root, tmp_path):
    def held_out(seed: int, **data) -> tuple[dict, list[str]]:
        config = _tiny_crystal_config(tmp_path, seed=seed)
        config["data"].update(data)
        sources = build_sources(config, log=lambda *_: None)
        val = sources["val"]
        return sources["info"], [val.structures[i].composition.formula for i in range(len(val))]

    info, rows = held_out(0)
    assert info["split_seed"] == 0 and len(info["val_rows_sha256"]) == 16
    assert held_out(5) == (info, rows)  # another training seed validates on the same rows
    other, other_rows = held_out(5, split_seed=2)
    assert other["split_seed"] == 2 and other["val_rows_sha256"] != info["val_rows_sha256"]
    assert other_rows != rows
    with pytest.raises(ValueError, match="split_seed must be a non-negative integer"):
        held_out(0, split_seed=-1)


def test_site_order_sorted_writes_sorted_bodies_and_is_checked(root, tmp_path):
    config = _tiny_crystal_config(tmp_path)
    config["data"].update({"site_order": "sorted", "infill_fraction": 0.0, "drop_prob": 1.0})
    train = build_sources(config, log=lambda *_: None)["train"]
    assert train.site_order == "sorted"
    rng = np.random.default_rng(0)
    for i in range(len(train)):
        body = train.text(i, rng).split("<gen>")[1].removesuffix("<eos>")
        lines = body[:-1].split("\n")
        sites = list(zip(lines[2::2], lines[3::2], strict=True))
        for element in {s for s, _ in sites}:
            coords = [c for s, c in sites if s == element]
            assert coords == sorted(coords), body
    config["data"]["site_order"] = "shuffled"
    with pytest.raises(ValueError, match=r"data\.site_order 'shuffled' unknown"):
        build_sources(config, log=lambda *_: None)
    config["data"].update({"site_order": "sorted", "form": "cif"})
    with pytest.raises(ValueError, match="ctl form only"):
        build_sources(config, log=lambda *_: None)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_runs_fast_dev_run(path, root, tmp_path):
    config = load_config(path)
    config["data"].update({"max_train": 48, "max_val": 8, "batch_size": 8})
    config["training"].update({"fast_dev_run": True, "accelerator": "cpu"})
    config["output"] = {"dir": str(tmp_path / "run"), "model_dir": str(tmp_path / "model")}
    target = train_text_lm(config, log=lambda *_: None)
    card = json.loads((target / "matgen.json").read_text())
    assert card["form"] == config["data"]["form"] and card["metadata"]["n_train"] == 48
    if card["kind"] == "crystal":
        assert card["metadata"]["site_order"] == config["data"].get("site_order", "given")
    assert yaml.safe_load(path.read_text())["output"]["model_dir"].startswith(
        "matgen/generators/lm/models/"
    )


@pytest.mark.slow
def test_a_few_minutes_of_mp20_training_give_mostly_valid_crystals(root, tmp_path):
    """The shipped recipe (configs/lm/crystal_mp20.yaml) cut to 300 steps (a few minutes) on
    4,000 crystals."""
    from matgen.evaluate.crystals import crystal_validity
    from matgen.generators.lm.generator import TextCrystalGenerator

    config = load_config(CONFIGS[0])
    assert CONFIGS[0].stem == "crystal_mp20"
    config["data"].update({"max_train": 4000, "max_val": 128})
    config["training"].update({"max_time": None, "max_steps": 300, "val_every_steps": 100})
    config["output"] = {"dir": str(tmp_path / "run"), "model_dir": str(tmp_path / "model")}
    generator = TextCrystalGenerator.load(str(train_text_lm(config, log=lambda *_: None)))
    assert generator.lm.card["metadata"]["export"]["val_loss"] < 1.8  # untrained: ln 144 = 5
    crystals = generator.sample(50, temperature=0.8, seed=0)
    assert len(crystals) == 50 and not generator.report.failures
    validity = crystal_validity(crystals)
    assert validity.structural.mean() >= 0.5
