"""Structural and compositional validity of crystals, as CDVAE and DiffCSP define them.

Structural validity: the minimum-image distance between every two distinct atoms (pymatgen's
``distance_matrix``) is at least ``cutoff`` = 0.5 Å and the cell volume is at least 0.1 Å^3.
(As in CDVAE, an atom's distance to its own periodic image is not checked.)

Compositional validity (SMACT charge neutrality plus the Pauling electronegativity test, CDVAE's
definition): :func:`matgen.data.composition.smact_validity`, re-exported here with
:func:`~matgen.data.composition.reduced_composition`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from matgen.data.composition import (
    MAX_OXIDATION_COMBINATIONS,
    reduced_composition,
    smact_validity,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "MAX_OXIDATION_COMBINATIONS",
    "reduced_composition",
    "smact_validity",
    "structure_validity",
]


def structure_validity(
    structure: Structure, *, cutoff: float = 0.5, min_volume: float = 0.1
) -> bool:
    """True when every two distinct atoms are at least ``cutoff`` Å apart (minimum image) and
    the volume is at least ``min_volume`` Å^3."""
    if len(structure) == 0 or structure.volume < min_volume:
        return False
    distances = structure.distance_matrix + np.eye(len(structure)) * (cutoff + 10.0)
    return bool(distances.min() >= cutoff)
