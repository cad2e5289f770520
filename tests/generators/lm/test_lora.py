"""LoRA on a local pretrained causal LM: training moves only the adapters, the loss falls, and a
saved adapter reloads to identical logits (also after merging)."""

from __future__ import annotations

import pytest
import torch

from matgen.generators.lm.lora import (
    add_lora,
    load_lora,
    load_pretrained_lm,
    merge_lora,
    save_lora,
)
from matgen.generators.lm.model import build_causal_lm, preset

IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(params=["gpt2-tiny", "llama-small"])
def base_dir(request, tmp_path):
    """A tiny 'pretrained' model written locally (nothing is downloaded)."""
    cfg = preset(request.param, n_layer=1, n_embd=32, n_head=2, intermediate_size=64)
    model = build_causal_lm(cfg, 40, **IDS, seed=0)
    model.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def test_lora_fine_tunes_saves_and_reloads(base_dir, tmp_path):
    torch.manual_seed(0)
    model = add_lora(load_pretrained_lm(base_dir), r=4, alpha=8, dropout=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    batch = torch.randint(3, 40, (4, 12))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=batch).logits
    save_lora(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    reloaded = load_lora(load_pretrained_lm(base_dir), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=batch).logits, expected)
        merged = merge_lora(reloaded)
        torch.testing.assert_close(merged(input_ids=batch).logits, expected, atol=1e-5, rtol=1e-5)
    assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_new_adapter_starts_as_the_base_model(base_dir):
    base = load_pretrained_lm(base_dir).eval()
    batch = torch.randint(3, 40, (2, 6))
    with torch.no_grad():
        before = base(input_ids=batch).logits
        adapted = add_lora(base, r=2, target_modules=None).eval()
        assert torch.equal(adapted(input_ids=batch).logits, before)


def test_pickled_or_missing_weights_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_pretrained_lm(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors"):
        load_pretrained_lm(tmp_path)
    with pytest.raises(ValueError, match="safetensors"):
        load_lora(None, tmp_path)
