"""Novelty of relaxed candidates against a reference set of known crystals.

A candidate is novel when ``StructureMatcher`` matches it to no reference crystal
(:func:`matgen.evaluate.crystal.matching.uniqueness_and_novelty`). Matching crystals share their
reduced composition, so the references are indexed by it once and each candidate is compared with
its own bucket only; reference structures are built lazily, bucket by bucket.

The default reference is MP-20 train + val + test from the data root (about 38,000 crystals).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from matgen.evaluate.crystal.matching import UN_MATCHER, MatcherSettings, uniqueness_and_novelty
from matgen.evaluate.crystal.validity import reduced_composition

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["DEFAULT_REFERENCE", "ReferenceSet", "load_reference"]

DEFAULT_REFERENCE = "mp_20"

_Key = tuple[tuple[int, ...], tuple[int, ...]]


class ReferenceSet:
    """Known crystals bucketed by reduced composition.

    Args:
        name: what the set is (for the store's provenance).
        compositions: the atomic numbers of each reference crystal.
        build: ``build(i)`` returns reference crystal ``i`` as a pymatgen ``Structure``.
        matcher: ``StructureMatcher`` tolerances.
    """

    def __init__(
        self,
        name: str,
        compositions: Sequence[Sequence[int]],
        build: Callable[[int], Structure],
        *,
        matcher: MatcherSettings = UN_MATCHER,
    ) -> None:
        self.name = name
        self.matcher = matcher
        self._build = build
        self._rows: dict[_Key, list[int]] = defaultdict(list)
        for i, numbers in enumerate(compositions):
            self._rows[reduced_composition(numbers)].append(i)
        self._structures: dict[_Key, list[Structure]] = {}
        self.size = len(compositions)

    @classmethod
    def from_structures(
        cls, name: str, structures: Sequence[Structure], *, matcher: MatcherSettings = UN_MATCHER
    ) -> ReferenceSet:
        return cls(
            name, [s.atomic_numbers for s in structures], structures.__getitem__, matcher=matcher
        )

    def bucket(self, structure: Structure) -> list[Structure]:
        """The reference crystals with ``structure``'s reduced composition."""
        key = reduced_composition(structure.atomic_numbers)
        if key not in self._structures:
            self._structures[key] = [self._build(i) for i in self._rows.get(key, [])]
        return self._structures[key]

    def is_novel(self, structure: Structure) -> bool:
        """True when no reference crystal matches ``structure``."""
        references = self.bucket(structure)
        if not references:
            return True
        _, novel = uniqueness_and_novelty([structure], references, settings=self.matcher, workers=1)
        return bool(novel[0])


def load_reference(spec: str, *, matcher: MatcherSettings = UN_MATCHER) -> ReferenceSet | None:
    """A reference set from ``spec``: ``none``; a registered crystal set, all its splits
    (``mp_20``) or some (``mp_20:train,val``); or files in any screening input format."""
    if spec.lower() == "none":
        return None
    if Path(spec).exists():
        from matgen.data.structure_files import read_structures

        found = read_structures(spec)
        return ReferenceSet.from_structures(spec, found.structures, matcher=matcher)
    from matgen.data import get_spec, load_dataset

    name, _, splits = spec.partition(":")
    dataset_spec = get_spec(name)
    chosen = splits.split(",") if splits else list(dataset_spec.splits)
    sets = [load_dataset(name, split, progress=False) for split in chosen]
    rows = [(d, i) for d in sets for i in range(len(d))]
    compositions = [
        part for d in sets for part in np.split(d.collection.numbers, d.collection.offsets[1:-1])
    ]

    def build(k: int) -> Structure:
        dataset, i = rows[k]
        return dataset.structure(i)

    return ReferenceSet(f"{name}:{','.join(chosen)}", compositions, build, matcher=matcher)
