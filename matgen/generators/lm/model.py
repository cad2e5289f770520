"""The causal language model behind the text generators: a GPT-2 or LLaMA decoder from
Hugging Face ``transformers``, sized by a named preset.

A sequence of token ids :math:`t_1 \\dots t_L` is modelled autoregressively,

.. math::  p(t_1 \\dots t_L) = \\prod_i p(t_i \\mid t_{<i}),

and trained by next-token cross entropy. Nothing here knows about crystals or molecules: the
vocabulary size and the special-token ids come from the tokenizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

__all__ = ["PRESETS", "LMConfig", "build_causal_lm", "count_parameters", "preset"]

ARCHITECTURES = ("gpt2", "llama")


@dataclass(frozen=True)
class LMConfig:
    """Size and shape of a decoder-only transformer.

    Attributes:
        architecture: ``"gpt2"`` (learned positions, GELU MLP) or ``"llama"`` (rotary positions,
            RMSNorm, SwiGLU MLP).
        n_layer: transformer blocks.
        n_embd: hidden width :math:`d`.
        n_head: attention heads (``n_embd`` must be a multiple).
        n_positions: longest sequence in tokens (prompt + body + ``<eos>``).
        intermediate_size: MLP width (GPT-2 uses :math:`4d` when None; LLaMA about
            :math:`8d/3`).
        dropout: dropout on embeddings, attention and residuals (GPT-2 only; LLaMA's attention
            dropout).
    """

    architecture: str = "gpt2"
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 512
    intermediate_size: int | None = None
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"LMConfig.architecture {self.architecture!r} unknown; use one of {ARCHITECTURES}"
            )
        if self.n_embd % self.n_head:
            raise ValueError(
                f"LMConfig: n_embd={self.n_embd} is not a multiple of n_head={self.n_head}"
            )
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"LMConfig.{name} must be positive, not {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        return cls(**data)


PRESETS: dict[str, LMConfig] = {
    # unit tests: about 33 k parameters (with a 144-token ctl vocabulary)
    "gpt2-tiny": LMConfig("gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=512, dropout=0.0),
    # about 0.9 M parameters: the 1-thread CPU preset (2.5-4k tokens/s of training)
    "gpt2-mini": LMConfig("gpt2", n_layer=4, n_embd=128, n_head=4, n_positions=512),
    # about 3.3 M parameters: CPU-trainable in hours (~1.2k tokens/s on one thread)
    "gpt2-small": LMConfig("gpt2", n_layer=4, n_embd=256, n_head=4, n_positions=512),
    # about 3.2 M parameters, LLaMA blocks (rotary positions, RMSNorm, SwiGLU)
    "llama-small": LMConfig(
        "llama", n_layer=4, n_embd=256, n_head=4, n_positions=512, intermediate_size=688
    ),
    # about 25 M parameters: a GPU recipe
    "gpt2-medium": LMConfig("gpt2", n_layer=8, n_embd=512, n_head=8, n_positions=1024),
}


def preset(name: str, **overrides: Any) -> LMConfig:
    """A named preset (:data:`PRESETS`) with fields replaced by ``overrides``.

    Raises:
        ValueError: unknown preset name (the message lists them).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown LM preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def build_causal_lm(
    config: LMConfig,
    vocab_size: int,
    *,
    pad_token_id: int,
    bos_token_id: int,
    eos_token_id: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
) -> Any:
    """A randomly initialised ``transformers`` causal LM.

    Args:
        config: the architecture and its size.
        vocab_size: tokens in the tokenizer (embedding rows and output logits).
        pad_token_id, bos_token_id, eos_token_id: the tokenizer's special ids (stored in the
            model config and used by ``generate``).
        device, dtype: where the weights live and their precision.
        seed: seeds the initialisation (within a forked RNG, so the caller's global RNG state
            is untouched); None draws from the global RNG.

    Returns:
        A ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` in eval mode; ``model(input_ids)``
        gives logits ``(B, L, vocab_size)``.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = {"pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    if config.architecture == "gpt2":
        hf_config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_inner=config.intermediate_size,
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            **ids,
        )
        cls = GPT2LMHeadModel
    else:
        hf_config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=config.n_embd,
            intermediate_size=config.intermediate_size or 8 * config.n_embd // 3,
            num_hidden_layers=config.n_layer,
            num_attention_heads=config.n_head,
            num_key_value_heads=config.n_head,
            max_position_embeddings=config.n_positions,
            attention_dropout=config.dropout,
            tie_word_embeddings=True,
            **ids,
        )
        cls = LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = cls(hf_config)
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel is not matched by name
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.bos_token_id = bos_token_id
    model.generation_config.eos_token_id = eos_token_id
    return model.to(device=device, dtype=dtype).eval()


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
