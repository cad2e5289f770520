"""Structural and compositional validity of crystals, as CDVAE and DiffCSP define them.

Structural validity: the minimum-image distance between every two distinct atoms (pymatgen's
``distance_matrix``) is at least ``cutoff`` = 0.5 Å and the cell volume is at least 0.1 Å^3.
(As in CDVAE, an atom's distance to its own periodic image is not checked.)

Compositional validity (SMACT, Davies et al. 2019): a composition is valid if it is a single
element, an alloy of metals only, or if some assignment of oxidation states (from SMACT's
element data) is charge-neutral with the gcd-reduced counts and passes the Pauling
electronegativity test; compositions with more than 1e7 oxidation-state combinations are invalid.
Electronegativity data missing for an element counts as a pass, as in CDVAE. SMACT 4 returns a
list from ``neutral_ratios`` (older versions a tuple ``(bool, ratios)``); charge neutrality is
computed here directly — ``sum(oxidation_state * count) == 0`` — which is what ``neutral_ratios``
tests when given one stoichiometry per site.
(The compositional part lives in :mod:`matgen.data.composition`; it is re-exported here.)
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
