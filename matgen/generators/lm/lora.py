"""Low-rank adapters (LoRA, Hu et al. 2021) on any local pretrained causal LM, through ``peft``.

A frozen weight :math:`W \\in \\mathbb{R}^{d_{out} \\times d_{in}}` gets a trainable low-rank
update,

.. math::  W x \\;\\to\\; W x + \\frac{\\alpha}{r} B A x,
           \\quad A \\in \\mathbb{R}^{r \\times d_{in}},\\; B \\in \\mathbb{R}^{d_{out} \\times r},

with :math:`B = 0` at the start, so the adapted model begins exactly as the base model. Only
:math:`A, B` (and any ``modules_to_save``) train; an adapter directory holds just those, as
safetensors. Nothing is downloaded: bases are local directories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_lora", "load_lora", "load_pretrained_lm", "merge_lora", "save_lora"]

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def load_pretrained_lm(
    directory: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A causal LM from a local ``transformers`` directory, read through safetensors only.

    Raises:
        FileNotFoundError: ``directory`` has no ``config.json``.
        ValueError: no safetensors weights in it.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: not a transformers model directory (no config.json)")
    if not any(directory.glob("*.safetensors")):
        raise ValueError(f"{directory}: no .safetensors weights (pickled weights are not loaded)")
    model = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, use_safetensors=True, dtype=dtype
    )
    return model.to(device)


def add_lora(
    model: Any,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.05,
    target_modules: Sequence[str] | str | None = None,
    *,
    modules_to_save: Sequence[str] | None = None,
) -> Any:
    """Wrap ``model`` in LoRA adapters; the base weights are frozen.

    Args:
        model: a ``transformers`` causal LM.
        r: adapter rank.
        alpha: scale numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: names (suffixes) of the linear layers to adapt; None adapts every
            linear layer of the blocks (``"all-linear"``: attention and MLP, not the output head).
        modules_to_save: modules trained in full and saved with the adapter (e.g. the
            embeddings after new tokens were added: ``["wte", "lm_head"]``).

    Returns:
        A ``peft.PeftModel``; ``model(input_ids)`` as before.
    """
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    if r < 1:
        raise ValueError(f"LoRA rank r must be positive, not {r}")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    config = LoraConfig(
        r=int(r),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules="all-linear" if target_modules is None else target_modules,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        # GPT-2 keeps its linear maps as Conv1D (weight stored transposed)
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
        ensure_weight_tying=tied and bool(modules_to_save),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_lora(model: Any, directory: str | Path) -> Path:
    """Write the adapter (``adapter_config.json`` + ``adapter_model.safetensors``) only."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def load_lora(base: Any, directory: str | Path, *, trainable: bool = False) -> Any:
    """Attach a saved adapter to ``base`` (the same base model it was trained on).

    Raises:
        ValueError: the directory holds no safetensors adapter.
    """
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise ValueError(f"{directory}: no {ADAPTER_WEIGHTS} (pickled adapters are not loaded)")
    return PeftModel.from_pretrained(base, directory, is_trainable=trainable)


def merge_lora(model: Any) -> Any:
    """Fold the adapters into the base weights (:math:`W + \\frac{\\alpha}{r} BA`); returns a
    plain ``transformers`` model that saves and samples like any other."""
    return model.merge_and_unload()
