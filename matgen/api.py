"""``matgen.load(name)``: a shipped generator (or a checkpoint file / model directory) ready to
sample.

import matgen
generator = matgen.load("crystal-diffusion-mp20")
crystals = generator.sample(100, seed=0)                      # de novo
predicted = generator.sample(10, composition="SrTiO3", seed=0)  # structure prediction
text_lm = matgen.load("crystal-lm-mp20")                        # a crystal language model
perovskites = text_lm.sample(10, composition="SrTiO3", temperature=0.8, seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["available", "load"]


def available() -> list[str]:
    """Names of the generators that ship with matgen (diffusion checkpoints and text models)."""
    from matgen.generators.crystal.checkpoint import shipped_crystal_models
    from matgen.generators.lm.checkpoint import shipped_text_models

    return sorted({*shipped_crystal_models(), *shipped_text_models()})


def load(
    name_or_path: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    **settings: Any,
) -> Any:
    """A generator with ``sample(n, ...)``: a shipped name (:func:`available`), a crystal
    diffusion checkpoint file, or a text-model directory.

    Args:
        name_or_path: shipped name, checkpoint file or model directory.
        device, dtype: where and in which precision it samples.
        settings: sampler settings of the generator (e.g. ``steps``, ``step_lr``, ``chunk``;
            ``chunk`` and ``max_new_tokens`` for text models).

    Raises:
        FileNotFoundError: no such name or file (the message lists the shipped names).
        ValueError: the file is not a generator checkpoint.
    """
    from matgen.generators.lm.checkpoint import is_text_model

    if is_text_model(name_or_path):
        from matgen.generators.lm.generator import load_text_generator

        return load_text_generator(str(name_or_path), device=device, dtype=dtype, **settings)
    from matgen.generators.crystal.generator import CrystalGenerator

    return CrystalGenerator.load(str(name_or_path), device=device, dtype=dtype, **settings)
