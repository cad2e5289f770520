"""Saving and loading MACE checkpoints without executing pickled code, and the shipped models.

A checkpoint is one ``torch.save`` file holding plain data only, so it always loads with
``torch.load(..., weights_only=True)``:

    {"format": "matgen-mlff/1", "model": "MACE", "config": MACEConfig.to_dict(),
     "state_dict": {name: tensor}, "metadata": {...}}

``metadata`` carries provenance (training data, command, metrics). Shipped checkpoints live in
``matgen/mlff/models/NAME.pt`` with a data card ``NAME.json``; :func:`load_model` takes a
shipped name or a path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from matgen.mlff.config import MACEConfig
from matgen.mlff.mace import MACE

__all__ = [
    "FORMAT",
    "MODELS_DIR",
    "checkpoint_path",
    "load_model",
    "read_checkpoint",
    "save_model",
    "shipped_models",
]

FORMAT = "matgen-mlff/1"
MODELS_DIR = Path(__file__).with_name("models")


def save_model(model: MACE, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights cast to float64 on CPU) with its config and ``metadata``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # e3nn's generated code may hold constants in its state; they are rebuilt with the model.
    state = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if "._compiled_main" not in k
    }
    state = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "model": "MACE",
        "config": model.config.to_dict(),
        "state_dict": state,
        "metadata": json.loads(json.dumps(metadata or {})),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's plain-data payload, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ValueError(f"{path}: not a loadable matgen checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a matgen MLFF checkpoint (format "
            f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r},"
            f" expected {FORMAT!r})"
        )
    for key in ("config", "state_dict"):
        if key not in payload:
            raise ValueError(f"{path}: checkpoint lacks {key!r}")
    return payload


def shipped_models() -> list[str]:
    """Names of the checkpoints that ship with matgen."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.pt"))


def checkpoint_path(name_or_path: str | Path) -> Path:
    """A shipped model's file, or the given path."""
    candidate = MODELS_DIR / f"{name_or_path}.pt"
    if isinstance(name_or_path, str) and candidate.is_file():
        return candidate
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a shipped model ({', '.join(shipped_models()) or 'none'}) "
        "nor a checkpoint file"
    )


def load_model(
    name_or_path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> MACE:
    """Rebuild a model from a shipped name or a checkpoint path, on ``device`` in ``dtype``."""
    path = checkpoint_path(name_or_path)
    payload = read_checkpoint(path)
    config = MACEConfig.from_dict(payload["config"])
    model = MACE(config)
    # Checkpoints written before the convolution lost its (empty) e3nn tensors still carry them.
    state = {
        k: v
        for k, v in payload["state_dict"].items()
        if not k.endswith((".conv_tp.weight", ".conv_tp.output_mask"))
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "._compiled_main" not in k]  # constants, rebuilt above
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the architecture (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    model.metadata = dict(payload.get("metadata", {}))
    model.metadata.setdefault("sha256", _sha256(path))
    return model.to(device=device, dtype=dtype).eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
