"""Compositions: gcd reduction and SMACT charge neutrality, as CDVAE and DiffCSP define it.

Compositional validity (SMACT, Davies et al. 2019): a composition is valid if it is a single
element, an alloy of metals only, or if some assignment of oxidation states (from SMACT's
element data) is charge-neutral with the gcd-reduced counts and passes the Pauling
electronegativity test; compositions with more than 1e7 oxidation-state combinations are invalid.
Electronegativity data missing for an element counts as a pass, as in CDVAE. SMACT 4 returns a
list from ``neutral_ratios`` (older versions a tuple ``(bool, ratios)``); charge neutrality is
computed here directly — ``sum(oxidation_state * count) == 0`` — which is what ``neutral_ratios``
tests when given one stoichiometry per site.

Used by the evaluation suite (:mod:`matgen.evaluate.crystal.validity`) and by samplers that steer
toward valid compositions (:mod:`matgen.generators.lm.constrained`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from functools import lru_cache

import numpy as np

__all__ = [
    "MAX_OXIDATION_COMBINATIONS",
    "oxidation_combinations",
    "reduced_composition",
    "smact_validity",
]

MAX_OXIDATION_COMBINATIONS = 10_000_000
_BLOCK = 1 << 16


def reduced_composition(numbers: list[int] | np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(elements, counts)``: atomic numbers in ascending order and counts divided by their gcd."""
    counter = Counter(int(z) for z in numbers)
    elements = tuple(sorted(counter))
    counts = np.array([counter[z] for z in elements])
    counts = counts // np.gcd.reduce(counts)
    return elements, tuple(int(c) for c in counts)


@lru_cache(maxsize=200_000)
def smact_validity(
    elements: tuple[int, ...],
    counts: tuple[int, ...],
    *,
    pauling_test: bool = True,
    include_alloys: bool = True,
) -> bool:
    """SMACT charge neutrality plus the electronegativity test (see the module docstring).

    Args:
        elements: atomic numbers, as from :func:`reduced_composition`.
        counts: gcd-reduced counts, one per element.
    """
    import smact
    from pymatgen.core import Element

    symbols = tuple(Element.from_Z(z).symbol for z in elements)
    if len(set(symbols)) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in symbols):
        return True
    try:
        space = smact.element_dictionary(symbols)
    except KeyError:  # an element SMACT has no data for (e.g. Ts): no oxidation states known
        return False
    data = [space[s] for s in symbols]
    electronegativities = [e.pauling_eneg for e in data]
    oxidation_states = [list(e.oxidation_states or []) for e in data]
    if any(len(o) == 0 for o in oxidation_states):
        return False
    n_combinations = int(np.prod([len(o) for o in oxidation_states], dtype=np.float64))
    if n_combinations > MAX_OXIDATION_COMBINATIONS:
        return False
    skip_pauling = not pauling_test or any(e is None for e in electronegativities)
    weights = np.array(counts, dtype=np.int64)
    enegs = None if skip_pauling else np.asarray(electronegativities, dtype=np.float64)
    # Enumerate combinations in itertools.product order, in blocks, keeping the neutral ones.
    for block in _combination_blocks(oxidation_states):
        neutral = block[block @ weights == 0]
        if not len(neutral):
            continue
        if enegs is None:
            return True
        # SMACT's pauling_test (eneg_states_test): every cation (state > 0) strictly less
        # electronegative than every anion (state < 0), evaluated for the whole block at once
        cations = np.where(neutral > 0, enegs, -np.inf).max(axis=1)
        anions = np.where(neutral < 0, enegs, np.inf).min(axis=1)
        if np.any(cations < anions):
            return True
    return False


@lru_cache(maxsize=256)
def _oxidation_state_count(z: int) -> int:
    import smact
    from pymatgen.core import Element

    try:
        return len(smact.Element(Element.from_Z(z).symbol).oxidation_states or ())
    except (KeyError, NameError, ValueError):  # no SMACT data for the element (e.g. Ts)
        return 0


def oxidation_combinations(elements: tuple[int, ...]) -> int:
    """How many oxidation-state assignments :func:`smact_validity` may enumerate for these
    elements (atomic numbers): the product of their SMACT oxidation-state counts."""
    product = 1
    for z in elements:
        product *= _oxidation_state_count(int(z))
    return product


def _combination_blocks(choices: list[list[int]]):
    """Yield the Cartesian product of ``choices`` as int arrays of up to ``_BLOCK`` rows."""
    lead, rest = [], list(choices)
    # Split the product into an outer loop over leading sites and a vectorised inner block.
    inner = 1
    while rest and inner * len(rest[-1]) <= _BLOCK:
        inner *= len(rest[-1])
        lead.insert(0, rest.pop())
    grids = np.meshgrid(*[np.array(c, dtype=np.int64) for c in lead], indexing="ij") if lead else []
    inner_block = (
        np.stack([g.reshape(-1) for g in grids], axis=1) if lead else np.zeros((1, 0), np.int64)
    )
    for outer in itertools.product(*rest):
        prefix = np.broadcast_to(np.array(outer, dtype=np.int64), (len(inner_block), len(outer)))
        yield np.concatenate([prefix, inner_block], axis=1)
