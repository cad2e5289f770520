"""matgen: generative materials and molecular design.

Generators for crystals and molecules, a MACE-style equivariant force field, batched relaxation
and stability screening, and the evaluation suite, on one data model (:class:`AtomsBatch`).
Importing matgen has no side effects; heavy submodules load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "AtomsBatch": "matgen.data",
    "DataError": "matgen.data",
    "load_dataset": "matgen.data",
    "MatgenCalculator": "matgen.integrations.ase",
    "load_model": "matgen.mlff.checkpoint",
    "load": "matgen.api",
    "available": "matgen.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'matgen' has no attribute {name!r}")
