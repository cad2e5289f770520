"""Weights-only checkpoints of crystal diffusion models, and the ones that ship.

A checkpoint is a ``torch.save`` of plain data, read back with ``weights_only=True``::

    {"format": "matgen-crystal-diffusion", "config": {...}, "atom_counts": [...],
     "state_dict": {name: tensor}, "metadata": {...}}

Shipped checkpoints live in ``matgen/generators/crystal/models/NAME.pt`` beside a data card
``NAME.json`` (training data, steps, hardware, time, evaluation numbers, sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from matgen.generators.crystal.model import CrystalDiffusion, CrystalDiffusionConfig

__all__ = [
    "MODELS_DIR",
    "load_crystal_diffusion",
    "resolve_checkpoint",
    "save_crystal_diffusion",
    "shipped_crystal_models",
]

FORMAT = "matgen-crystal-diffusion"
MODELS_DIR = Path(__file__).resolve().parent / "models"


def save_crystal_diffusion(
    model: CrystalDiffusion, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (weights as float32 on the CPU) with its config, atom-count prior and
    ``metadata`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "atom_counts": [int(c) for c in model.atom_counts.tolist()],
        "state_dict": {
            k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu())
            for k, v in model.state_dict().items()
        },
        "metadata": json.loads(json.dumps(metadata or {}, default=str)),
    }
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def shipped_crystal_models() -> list[str]:
    """Names of the checkpoints in :data:`MODELS_DIR`."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.pt"))


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped model's file, or ``name_or_path`` itself when it is a file.

    Raises:
        FileNotFoundError: neither; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = MODELS_DIR / f"{name_or_path}.pt"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"no crystal diffusion checkpoint {str(name_or_path)!r}: not a file and not a shipped "
        f"model (shipped: {', '.join(shipped_crystal_models()) or 'none'})"
    )


def load_crystal_diffusion(
    name_or_path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> CrystalDiffusion:
    """Load a checkpoint without unpickling code; ``model.metadata`` carries its card data and
    sha256.

    Raises:
        ValueError: the file is not a (weights-only) crystal diffusion checkpoint.
    """
    path = resolve_checkpoint(name_or_path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a zip, or pickled objects beyond plain data
        raise ValueError(f"{path}: not a readable weights-only checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a matgen crystal diffusion checkpoint")
    model = CrystalDiffusion(
        CrystalDiffusionConfig.from_dict(payload["config"]), atom_counts=payload["atom_counts"]
    )
    model.load_state_dict(payload["state_dict"])
    model.metadata = dict(payload.get("metadata", {}))
    model.metadata["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    model.metadata["checkpoint"] = str(path)
    return model.to(device=device, dtype=dtype).eval()
