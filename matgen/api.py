"""``matgen.load(name)``: a shipped generator (or a checkpoint file) ready to sample.

import matgen
generator = matgen.load("crystal-diffusion-mp20")
crystals = generator.sample(100, seed=0)                      # de novo
predicted = generator.sample(10, composition="SrTiO3", seed=0)  # structure prediction
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["available", "load"]


def available() -> list[str]:
    """Names of the generators that ship with matgen."""
    from matgen.generators.crystal.checkpoint import shipped_crystal_models

    return shipped_crystal_models()


def load(
    name_or_path: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    **settings: Any,
) -> Any:
    """A generator with ``sample(n, ...)``: a shipped name (:func:`available`) or a checkpoint.

    Args:
        name_or_path: shipped name or checkpoint file.
        device, dtype: where and in which precision it samples.
        settings: sampler settings of the generator (e.g. ``steps``, ``step_lr``, ``chunk``).

    Raises:
        FileNotFoundError: no such name or file (the message lists the shipped names).
        ValueError: the file is not a generator checkpoint.
    """
    from matgen.generators.crystal.generator import CrystalGenerator

    return CrystalGenerator.load(str(name_or_path), device=device, dtype=dtype, **settings)
