"""Held-out validation rows, shared by the trainers.

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

__all__ = ["rows_digest", "split_seed_of"]


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
