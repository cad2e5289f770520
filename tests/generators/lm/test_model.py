"""LMConfig presets and the causal LM they build."""

from __future__ import annotations

import pytest
import torch

from matgen.generators.lm.model import (
    PRESETS,
    LMConfig,
    build_causal_lm,
    count_parameters,
    preset,
)

IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def test_presets_have_the_documented_sizes():
    with torch.device("meta"):  # shapes only, no initialisation
        sizes = {
            name: count_parameters(build_causal_lm(cfg, 144, **IDS, device="meta"))
            for name, cfg in PRESETS.items()
        }
    assert sizes["gpt2-tiny"] < 50_000
    assert 0.7e6 < sizes["gpt2-mini"] < 1.1e6
    assert 3e6 <= sizes["gpt2-small"] <= 6e6
    assert 3e6 <= sizes["llama-small"] <= 6e6
    assert 20e6 <= sizes["gpt2-medium"] <= 30e6


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-small"])
def test_forward_shapes_and_special_ids(name):
    cfg = preset(name, n_layer=1, n_embd=32, n_head=2, intermediate_size=64)
    model = build_causal_lm(cfg, 50, **IDS, seed=0)
    ids = torch.randint(0, 50, (3, 7))
    assert model(input_ids=ids).logits.shape == (3, 7, 50)
    assert model.config.pad_token_id == 0 and model.generation_config.eos_token_id == 2
    assert not model.training


def test_seeded_init_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_causal_lm(PRESETS["gpt2-tiny"], 40, **IDS, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_causal_lm(PRESETS["gpt2-tiny"], 40, **IDS, seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_device_and_dtype_are_arguments():
    model = build_causal_lm(PRESETS["gpt2-tiny"], 40, **IDS, dtype=torch.float64, seed=0)
    assert next(model.parameters()).dtype == torch.float64


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="n_head"):
        LMConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="architecture"):
        LMConfig(architecture="mamba")
    with pytest.raises(ValueError, match="presets: gpt2-tiny"):
        preset("gpt5")
    assert LMConfig.from_dict(PRESETS["llama-small"].to_dict()) == PRESETS["llama-small"]
