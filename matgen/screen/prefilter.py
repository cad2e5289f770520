"""What is worth relaxing: the validity pre-filter and deduplication, before any force call.

Validity is the evaluation suite's (:func:`matgen.evaluate.crystals.crystal_validity`):
structural (every two atoms at least ``distance_cutoff`` Å apart, volume at least 0.1 Å^3) and
compositional (SMACT charge neutrality and electronegativity). Among the valid candidates, in
input order, a candidate that ``StructureMatcher`` matches to an earlier one is a duplicate
(:func:`matgen.evaluate.crystal.matching.uniqueness_and_novelty`, comparisons within reduced-
formula buckets); the first of each group is unique and is the one relaxed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matgen.evaluate.crystal.matching import UN_MATCHER, MatcherSettings, uniqueness_and_novelty

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["Verdict", "prefilter"]


@dataclass(frozen=True)
class Verdict:
    """Validity and uniqueness of one candidate; ``duplicate_of`` is the id it repeats."""

    valid: bool
    unique: bool
    reason: str = ""
    duplicate_of: str = ""


def prefilter(
    structures: Sequence[Structure],
    ids: Sequence[str],
    *,
    distance_cutoff: float = 0.5,
    matcher: MatcherSettings = UN_MATCHER,
    workers: int = 1,
) -> list[Verdict]:
    """One :class:`Verdict` per structure (invalid ones are never unique).

    Args:
        structures: candidates in input order (the first of a group of duplicates is kept).
        ids: their stable ids, for the reasons and ``duplicate_of``.
        distance_cutoff: minimum interatomic distance for structural validity, Å.
        matcher: ``StructureMatcher`` tolerances.
        workers: processes for the matching (1: this process).
    """
    from matgen.evaluate.crystals import crystal_validity

    validity = crystal_validity(structures, ids=ids, distance_cutoff=distance_cutoff)
    reasons = {bad.index: bad.reason for bad in validity.invalid}
    valid = [i for i in range(len(structures)) if i not in reasons]
    unique, _ = uniqueness_and_novelty(
        [structures[i] for i in valid], [], settings=matcher, workers=workers
    )
    is_unique = {i: bool(u) for i, u in zip(valid, unique, strict=True)}
    duplicate_of = _representatives(structures, ids, is_unique, matcher)
    return [
        Verdict(False, False, reason=reasons[i])
        if i in reasons
        else Verdict(True, is_unique[i], duplicate_of=duplicate_of.get(i, ""))
        for i in range(len(structures))
    ]


def _representatives(
    structures: Sequence[Structure],
    ids: Sequence[str],
    is_unique: dict[int, bool],
    settings: MatcherSettings,
) -> dict[int, str]:
    """For each duplicate, the id of the first unique candidate it matches."""
    firsts: dict[str, list[int]] = defaultdict(list)
    for i, unique in is_unique.items():
        if unique:
            firsts[structures[i].composition.reduced_formula].append(i)
    matcher = settings.matcher()
    out = {}
    for i, unique in is_unique.items():
        if unique:
            continue
        formula = structures[i].composition.reduced_formula
        out[i] = next(
            (
                ids[j]
                for j in firsts[formula]
                if j < i and matcher.fit(structures[i], structures[j])
            ),
            "",
        )
    return out
