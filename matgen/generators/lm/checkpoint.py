"""Model directories of the text generators, and the ones that ship.

A model directory holds::

    config.json, generation_config.json   the transformers architecture
    model.safetensors                      the weights (read only through safetensors)
    tokenizer.json, tokenizer_config.json  the tokenizer (matgen.generators.lm.tokenizer)
    matgen.json                            the data card: format "matgen-text-lm", kind
                                           (crystal | molecule), form (ctl | cif | selfies |
                                           smiles), conditions, max_atoms, max_body_tokens,
                                           training metadata, evaluation numbers, sha256 of
                                           model.safetensors

Shipped models live in ``matgen/generators/lm/models/<name>/``; :func:`load_text_lm` takes a
shipped name or a directory. Nothing is ever unpickled: a directory without
``model.safetensors`` (e.g. only ``pytorch_model.bin``) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CARD",
    "FORMAT",
    "MODELS_DIR",
    "TextLM",
    "is_text_model",
    "load_text_lm",
    "quiet_transformers",
    "resolve_model_dir",
    "save_text_lm",
    "shipped_text_models",
    "update_card",
]

FORMAT = "matgen-text-lm"
CARD = "matgen.json"
WEIGHTS = "model.safetensors"
MODELS_DIR = Path(__file__).resolve().parent / "models"
KINDS = {"crystal": ("ctl", "cif"), "molecule": ("selfies", "smiles")}


@dataclass
class TextLM:
    """A loaded text model: network, tokenizer and data card.

    Attributes:
        model: the ``transformers`` causal LM (eval mode).
        tokenizer: its ``PreTrainedTokenizerFast``.
        card: the contents of ``matgen.json`` plus ``path`` (the directory).
    """

    model: Any
    tokenizer: Any
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"crystal"`` or ``"molecule"``."""
        return str(self.card["kind"])

    @property
    def form(self) -> str:
        """Text form of the bodies: ``ctl``, ``cif``, ``selfies`` or ``smiles``."""
        return str(self.card["form"])

    @property
    def conditions(self) -> tuple[str, ...]:
        """Prompt fields the model was trained with (e.g. ``composition``, ``e_form``)."""
        return tuple(self.card.get("conditions", ()))

    @property
    def max_atoms(self) -> int | None:
        value = self.card.get("max_atoms")
        return None if value is None else int(value)

    @property
    def elements(self) -> tuple[str, ...] | None:
        """Element symbols of the training crystals (None: not recorded)."""
        value = self.card.get("elements")
        return None if value is None else tuple(value)

    @property
    def max_body_tokens(self) -> int | None:
        """Longest body (tokens after ``<gen>``, with ``<eos>``) seen in training."""
        value = self.card.get("max_body_tokens")
        return None if value is None else int(value)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without progress bars and info messages, restored afterwards."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_text_lm(
    model: Any,
    tokenizer: Any,
    directory: str | Path,
    *,
    kind: str,
    form: str,
    conditions: Sequence[str] = (),
    max_atoms: int | None = None,
    elements: Sequence[str] | None = None,
    max_body_tokens: int | None = None,
    metadata: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory (weights as float32 safetensors) and its card, replacing any
    directory of that name only once the new one is complete.

    Args:
        model: a ``transformers`` causal LM (a peft model must be merged first:
            :func:`matgen.generators.lm.lora.merge_lora`).
        tokenizer: its tokenizer.
        directory: the model directory to write.
        kind, form: ``crystal`` with ``ctl``/``cif``, or ``molecule`` with ``selfies``/``smiles``.
        conditions: prompt fields trained on.
        max_atoms: the largest crystal the model writes (crystals).
        elements: the elements of the training crystals (free sampling uses only these).
        max_body_tokens: longest training body in tokens, ``<eos>`` included.
        metadata: training provenance (config, data, n_train, parameters, wall time, ...).
        evaluation: evaluation numbers.

    Raises:
        ValueError: an unknown kind or a form that does not belong to it.
    """
    if kind not in KINDS or form not in KINDS[kind]:
        raise ValueError(
            f"kind/form {kind!r}/{form!r} invalid; use one of "
            + ", ".join(f"{k}/{f}" for k, forms in KINDS.items() for f in forms)
        )
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    state = {
        k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu())
        for k, v in model.state_dict().items()
    }
    dtype = model.dtype
    model.to(torch.float32)
    try:
        with quiet_transformers():
            model.save_pretrained(tmp, state_dict=state)
    finally:
        model.to(dtype)
    tokenizer.save_pretrained(tmp)
    card = {
        "format": FORMAT,
        "kind": kind,
        "form": form,
        "conditions": list(conditions),
        "max_atoms": max_atoms,
        "elements": None if elements is None else sorted(elements),
        "max_body_tokens": max_body_tokens,
        "architecture": type(model).__name__,
        "vocab_size": len(tokenizer),
        "metadata": json.loads(json.dumps(metadata or {}, default=str)),
        "evaluation": json.loads(json.dumps(evaluation or {}, default=str)),
        "sha256": _sha256(tmp / WEIGHTS),
    }
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
    old = directory.with_name(f".{directory.name}.old{os.getpid()}")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def update_card(directory: str | Path, evaluation: dict[str, Any]) -> Path:
    """Merge ``evaluation`` numbers into a model directory's card (weights untouched)."""
    path = resolve_model_dir(directory) / CARD
    card = json.loads(path.read_text())
    card.setdefault("evaluation", {}).update(json.loads(json.dumps(evaluation, default=str)))
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def shipped_text_models() -> list[str]:
    """Names of the model directories in :data:`MODELS_DIR`."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.parent.name for p in MODELS_DIR.glob(f"*/{CARD}"))


def is_text_model(name_or_path: str | Path) -> bool:
    """True for a shipped text-model name or a directory with a ``matgen.json`` card."""
    path = Path(name_or_path)
    if (path / CARD).is_file():
        return True
    return str(name_or_path) in shipped_text_models()


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A shipped model's directory, or ``name_or_path`` itself when it is a model directory.

    Raises:
        FileNotFoundError: neither; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if (path / CARD).is_file():
        return path
    shipped = MODELS_DIR / str(name_or_path)
    if (shipped / CARD).is_file():
        return shipped
    raise FileNotFoundError(
        f"no text model {str(name_or_path)!r}: not a directory with {CARD} and not a shipped "
        f"model (shipped: {', '.join(shipped_text_models()) or 'none'})"
    )


def load_text_lm(
    name_or_path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TextLM:
    """Load a model directory through safetensors, checking the weights' sha256 against the card.

    Raises:
        FileNotFoundError: no such model (see :func:`resolve_model_dir`).
        ValueError: not a matgen text model, no ``model.safetensors``, or weights whose sha256
            differs from the card's.
    """
    from transformers import AutoModelForCausalLM

    from matgen.generators.lm.tokenizer import load_tokenizer

    directory = resolve_model_dir(name_or_path)
    card = json.loads((directory / CARD).read_text())
    if card.get("format") != FORMAT:
        raise ValueError(f"{directory / CARD}: format is {card.get('format')!r}, not {FORMAT!r}")
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise ValueError(
            f"{directory}: no {WEIGHTS}; matgen loads text models only from safetensors "
            "(never pickled .bin files)"
        )
    digest = _sha256(weights)
    if card.get("sha256") and card["sha256"] != digest:
        raise ValueError(
            f"{weights}: sha256 {digest[:12]}… differs from the card's {card['sha256'][:12]}…; "
            "the weights were changed or damaged"
        )
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            directory, use_safetensors=True, local_files_only=True, dtype=dtype
        )
    card = {**card, "sha256": digest, "path": str(directory)}
    return TextLM(model.to(device).eval(), load_tokenizer(directory), card)
