"""Held-out validation rows, shared by the trainers (:func:`validation_split` for the force-field
and crystal-diffusion trainers; the text-LM trainer keeps its own draw, with the same seed).

Every trainer that holds a ``val_fraction`` of its training rows out draws them with
``data.split_seed`` (default 0), never with the training seed: runs that differ only in their
seed, and later stages that start from an earlier model on the same data, then validate on the
same rows, none of which any stage has trained on. The data card records the split seed and
:func:`rows_digest` of the held-out rows, so two cards show at a glance whether they share them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["rows_digest", "split_seed_of", "validation_split"]


def split_seed_of(data_cfg: dict[str, Any]) -> int:
    """The seed of the held-out rows: ``data.split_seed``, 0 when absent."""
    value = data_cfg.get("split_seed", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"data.split_seed must be a non-negative integer, got {value!r}")
    return value


def rows_digest(rows: Iterable[int]) -> str:
    """A short fingerprint of a set of row indices (recorded on the data card)."""
    return hashlib.sha256(",".join(map(str, sorted(int(r) for r in rows))).encode()).hexdigest()[
        :16
    ]


def validation_split(n: int, fraction: float, split_seed: int = 0) -> tuple[list[int], list[int]]:
    """Training and validation row indices: a ``fraction`` of ``n`` rows (at least one) drawn
    with ``split_seed``. The training seed plays no part, so runs that differ only in it, and
    fine-tunes of a model on its own data, hold out the same rows."""
    if not 0.0 < fraction < 1.0 or n < 2:
        raise ValueError(
            f"val_fraction must lie strictly between 0 and 1, with at least 2 training rows "
            f"to split (got {fraction} of {n} rows)"
        )
    order = np.random.default_rng(split_seed).permutation(n)
    n_val = min(n - 1, max(1, round(fraction * n)))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
