"""GrowingCache: the same keys, values and generated tokens as transformers' DynamicCache."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from matgen.generators.lm.kv_cache import GrowingCache, _GrowingLayer
from matgen.generators.lm.model import build_causal_lm, preset
from matgen.generators.lm.sampler import _cache_name


def _states(seed: int, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(
        batch, 2, length, 4, generator=g
    )


def test_layer_operations_match_dynamic_layer():
    from transformers.cache_utils import DynamicLayer

    ours, theirs = _GrowingLayer(), DynamicLayer()
    for step, length in enumerate([5, 1, 1, 70, 1]):  # the 70 forces a reallocation
        k, v = _states(step, 3, length)
        a, b = ours.update(k, v), theirs.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert ours.get_seq_length() == theirs.get_seq_length()
    index = torch.tensor([2, 0])
    ours.batch_select_indices(index)
    theirs.batch_select_indices(index)
    ours.crop(-3)
    theirs.crop(-3)
    ours.batch_repeat_interleave(2)
    theirs.batch_repeat_interleave(2)
    k, v = _states(9, 4, 1)
    a, b = ours.update(k, v), theirs.update(k, v)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert ours.get_seq_length() == theirs.get_seq_length() == 5 + 1 + 1 + 70 + 1 - 3 + 1
    with pytest.raises(ValueError, match="negative"):
        ours.crop(2)


@pytest.mark.parametrize("do_sample", [False, True])
def test_generate_gives_the_same_tokens(do_sample):
    model = build_causal_lm(
        preset("gpt2-tiny"), 40, pad_token_id=0, bos_token_id=1, eos_token_id=2, seed=0
    ).eval()
    ids = torch.randint(3, 40, (6, 5), generator=torch.Generator().manual_seed(0))
    out = []
    for cache in (DynamicCache(), GrowingCache()):
        torch.manual_seed(0)
        result = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=90,  # past the first buffer of 64 positions
            min_new_tokens=90,
            do_sample=do_sample,
            top_k=0,
            pad_token_id=0,
            eos_token_id=2,
            **{_cache_name(): cache},
        )
        out.append(result)
    assert torch.equal(out[0], out[1])
