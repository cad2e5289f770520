"""Energy above the convex hull against a reference, with pymatgen's ``PhaseDiagram``.

Math. For a compound of ``N`` atoms, atomic fractions ``x_el`` and total energy ``E`` (eV), the
formation energy per atom against elemental energies ``μ_el`` (eV/atom) is

    ΔE_f = E / N − Σ_el x_el μ_el.

The hull of a chemical system is the lower convex envelope of the reference points
``(x_k, ΔE_f,k)`` (elements at ``ΔE_f = 0``); at composition ``x`` it is

    E_hull(x) = min_w Σ_k w_k ΔE_f,k   subject to   Σ_k w_k x_k = x,  w_k ≥ 0,  Σ_k w_k = 1,

and ``e_above_hull = ΔE_f(x) − E_hull(x)`` (eV/atom). The phases with ``w_k > 0`` are the
decomposition products and ``w_k`` their atomic fractions. A candidate below the hull gets a
negative ``e_above_hull`` (it would become a new hull vertex); ``e_above_hull <= t`` is
"stable at threshold ``t``" (0 and 0.1 eV/atom are reported, with a tolerance of
``STABILITY_TOLERANCE`` for round-off).

Energy scales. A hull lives in one energy scale, fixed by its elemental energies ``μ_el``. A
potential's energies live in another, so a candidate's formation energy is taken against the
*potential's* elemental energies ``μ^pot`` (its energies of relaxed elemental structures) and
then placed on the reference hull:

    ΔE_f = (E^pot + ΔE^corr) / N − Σ_el x_el μ^pot_el.

Corrections (``corrections=``). The MP reference energies carry the MP2020 corrections (anion
corrections for oxides, fluorides, …; GGA/GGA+U mixing corrections for transition-metal oxides
and fluorides). A potential trained on *raw* MP energies (MPtrj raw energies, e.g. MACE-MP-0)
predicts uncorrected energies, so ``"mp2020"`` adds ``ΔE^corr`` from pymatgen's
``MaterialsProject2020Compatibility`` (U values set as MP's for that composition, POTCAR checks
off) before comparing. A potential trained on *corrected* energies (e.g. CHGNet, trained on
MPtrj's MP2020-corrected energies) must use ``"none"``: the correction is already inside its
predictions. Elemental references get no correction in either case (MP2020 corrects compounds
only). Energies handed in as formation energies are never corrected.

Three references:

- :meth:`ReferenceHull.from_mp`: the built-in DFT hull from the formation energies of the MP data
  under the data root (:mod:`matgen.screen.reference`), scale ``μ_el`` = MP's elemental
  reference energies;
- :class:`matgen.screen.mlff_hull.MLFFHull`: MP reference structures relaxed with the same
  potential (fully consistent energies, no elemental scale change);
- :meth:`ReferenceHull.from_entries`: the user's pymatgen ``ComputedEntry`` /
  ``ComputedStructureEntry`` JSON, scale = its own lowest elemental entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from matgen.data.errors import DataError
from matgen.screen.formation import (
    CORRECTIONS,
    Corrections,
    energy_correction,
    formation_energy_per_atom,
)
from matgen.screen.hull_result import STABILITY_TOLERANCE, HullResult

if TYPE_CHECKING:
    import torch
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition, Structure

    from matgen.screen.reference import MPReferenceData

__all__ = [
    "STABILITY_TOLERANCE",
    "Corrections",
    "HullResult",
    "ReferenceHull",
    "energy_correction",
    "formation_energy_per_atom",
    "hull_stage",
]

MAX_DIAGRAMS = 4096  # phase diagrams kept in memory per hull


class ReferenceHull:
    """Reference phases with energies in one elemental scale; hulls built per chemical system.

    A ``PhaseDiagram`` is built on first use for each chemical system a candidate needs, from the
    reference entries whose elements are a subset of it (never one diagram over all elements),
    and kept.

    Args:
        compositions: formula strings or compositions of the reference phases.
        energies_per_atom: their energies (eV/atom) in the hull's scale.
        ids: an id per phase (reported in decompositions).
        elemental_energies: ``μ_el`` (eV/atom), the scale; elements missing here take the lowest
            single-element reference energy. An element with neither is not covered.
        name: what the reference is, for reports.
        corrections: ``"none"`` or ``"mp2020"``, applied to candidate energies handed in as
            energies (see the module docstring).
        completeness: ``elements -> bool`` telling whether the reference holds every known
            hull phase of that system, when the reference can tell.
    """

    def __init__(
        self,
        compositions: Sequence[Composition | str],
        energies_per_atom: Sequence[float],
        *,
        ids: Sequence[str] | None = None,
        elemental_energies: Mapping[str, float] | None = None,
        name: str = "custom",
        corrections: Corrections = "none",
        completeness: Callable[[frozenset[str]], bool] | None = None,
    ) -> None:
        from pymatgen.core import Composition

        if corrections not in CORRECTIONS:
            raise ValueError(f"corrections must be one of {CORRECTIONS}, not {corrections!r}")
        if len(compositions) != len(energies_per_atom):
            raise ValueError(
                f"{len(compositions)} compositions but {len(energies_per_atom)} energies"
            )
        self.name = name
        self.mp_data: MPReferenceData | None = None  # set by from_mp
        self.corrections = corrections
        self.completeness = completeness
        self.compositions = [Composition(c) for c in compositions]
        self.energies_per_atom = [float(e) for e in energies_per_atom]
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(self))]
        self.elemental_energies: dict[str, float] = {}
        self._by_elements: dict[frozenset[str], list[int]] = {}
        for k, comp in enumerate(self.compositions):
            elements = frozenset(el.symbol for el in comp.elements)
            self._by_elements.setdefault(elements, []).append(k)
            if len(elements) == 1:
                (el,) = elements
                old = self.elemental_energies.get(el, math.inf)
                self.elemental_energies[el] = min(old, self.energies_per_atom[k])
        self.elemental_energies.update({k: float(v) for k, v in (elemental_energies or {}).items()})
        self._diagrams: dict[frozenset[str], PhaseDiagram] = {}

    def __len__(self) -> int:
        return len(self.compositions)

    def __repr__(self) -> str:
        return f"ReferenceHull({self.name!r}, {len(self)} phases, corrections={self.corrections!r})"

    @classmethod
    def from_mp(
        cls,
        data_root: str | Path | None = None,
        *,
        cache: str | Path | None = None,
        corrections: Corrections = "none",
    ) -> ReferenceHull:
        """The built-in DFT hull: MP formation energies of the MP-20 and MPTS-52 rows under the
        data root, on the scale of MP's elemental reference entries (energy per atom of phase
        ``k`` = ``ΔE_f,k + Σ x_el μ^MP_el``). See :mod:`matgen.screen.reference` for the sources
        and the disk cache."""
        from matgen.screen.reference import load_mp_reference

        data = load_mp_reference(data_root, cache=cache)
        mu = data.elemental_energies
        energies = [
            e + _mean_energy(formula, mu)
            for formula, e in zip(data.formulas, data.formation_energies, strict=True)
        ]
        hull = cls(
            data.formulas,
            energies,
            ids=data.ids,
            elemental_energies=mu,
            name=f"MP ({len(data.ids)} phases, MP-20 + MPTS-52)",
            corrections=corrections,
            completeness=lambda elements: not data.missing_stable_ids(elements),
        )
        hull.mp_data = data
        return hull

    @classmethod
    def from_entries(cls, path: str | Path, *, corrections: Corrections = "none") -> ReferenceHull:
        """Entries from a pymatgen ``ComputedEntry`` / ``ComputedStructureEntry`` JSON file
        (gzipped or not): a list of entries, a ``{id: entry}`` object, or one entry. Each entry's
        ``energy`` (its corrections included) sets its point; the scale is the lowest
        single-element entry of each element, so the file must hold every element's reference.
        """
        from monty.serialization import loadfn
        from pymatgen.entries.computed_entries import ComputedEntry

        try:
            raw = loadfn(str(path))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read entries: {exc}", path=path) from None
        if isinstance(raw, ComputedEntry):
            raw = [raw]
        keys = list(raw) if isinstance(raw, dict) else None
        items = list(raw.values()) if isinstance(raw, dict) else list(raw)
        for k, entry in enumerate(items):
            if isinstance(entry, dict) and "energy" in entry:
                items[k] = entry = ComputedEntry.from_dict(entry)
            if not isinstance(entry, ComputedEntry):
                raise DataError(
                    f"expected a pymatgen ComputedEntry, found {type(entry).__name__}",
                    path=path,
                    item=str(keys[k] if keys else k),
                )
        ids = [
            str(keys[k] if keys else (e.entry_id if e.entry_id is not None else k))
            for k, e in enumerate(items)
        ]
        return cls(
            [e.composition for e in items],
            [e.energy_per_atom for e in items],
            ids=ids,
            name=f"entries from {Path(path).name} ({len(items)})",
            corrections=corrections,
        )

    def phase_diagram(self, elements: frozenset[str] | Sequence[str]) -> PhaseDiagram:
        """The ``PhaseDiagram`` of ``elements``: every reference phase whose elements are a
        subset, plus an elemental point at ``μ_el`` for each element. Built once, then kept.

        Raises:
            KeyError: an element has no elemental energy.
        """
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
        from pymatgen.core import Composition

        elements = frozenset(elements)
        diagram = self._diagrams.get(elements)
        if diagram is None:
            entries = [
                PDEntry(Composition(el), self.elemental_energies[el], attribute=f"mu:{el}")
                for el in sorted(elements)
            ]
            for indices in self._indices_within(elements):
                entries += [
                    PDEntry(
                        self.compositions[k],
                        self.energies_per_atom[k] * self.compositions[k].num_atoms,
                        attribute=self.ids[k],
                    )
                    for k in indices
                ]
            diagram = self._keep(elements, PhaseDiagram(entries))
        return diagram

    def _indices_within(self, elements: frozenset[str]) -> list[list[int]]:
        """Reference phases whose elements are a subset of ``elements``, grouped by element set."""
        if 2 ** len(elements) < len(self._by_elements):
            subsets = (
                frozenset(c) for k in range(1, len(elements) + 1) for c in combinations(elements, k)
            )
            return [self._by_elements[s] for s in subsets if s in self._by_elements]
        return [ix for s, ix in self._by_elements.items() if s <= elements]

    def _keep(self, elements: frozenset[str], diagram: PhaseDiagram) -> PhaseDiagram:
        """Remember ``diagram``, forgetting the oldest beyond ``MAX_DIAGRAMS``."""
        while len(self._diagrams) >= MAX_DIAGRAMS:
            del self._diagrams[next(iter(self._diagrams))]
        self._diagrams[elements] = diagram
        return diagram

    def e_above_hull(
        self,
        items: Sequence[Structure | Composition | str],
        energies_per_atom: Sequence[float] | None = None,
        *,
        formation_energies: Sequence[float] | None = None,
        elemental_energies: Mapping[str, float] | None = None,
    ) -> list[HullResult]:
        """Place candidates on the hull.

        Give exactly one of:

        - ``energies_per_atom`` (eV/atom): total energies. With ``elemental_energies`` (the same
          potential's ``μ^pot``, eV/atom) they are turned into ``ΔE_f`` against those; without,
          they must already be in this hull's scale. ``corrections`` applies to them.
        - ``formation_energies`` (eV/atom): ``ΔE_f``, used as given.

        Returns:
            One :class:`HullResult` per item, in order. A candidate with an element the
            reference lacks gets NaN energies, ``covered=False`` and a reason; one with an
            element that ``elemental_energies`` lacks (or has as NaN) gets NaN and a reason.
        """
        if (energies_per_atom is None) == (formation_energies is None):
            raise ValueError("give exactly one of energies_per_atom and formation_energies")
        values = energies_per_atom if energies_per_atom is not None else formation_energies
        assert values is not None
        if len(values) != len(items):
            raise ValueError(f"{len(items)} candidates but {len(values)} energies")
        compositions = [_composition(item) for item in items]
        self._prepare({el.symbol for comp in compositions for el in comp.elements})
        return [
            self._place(
                item,
                comp,
                float(v),
                formation=formation_energies is not None,
                mu=elemental_energies,
            )
            for item, comp, v in zip(items, compositions, values, strict=True)
        ]

    def _prepare(self, elements: set[str]) -> None:
        """Hook run before placing candidates with ``elements``: a subclass that computes its
        elemental energies on demand does it here (all at once)."""

    def _place(
        self,
        item: Structure | Composition | str,
        comp: Composition,
        value: float,
        *,
        formation: bool,
        mu: Mapping[str, float] | None,
    ) -> HullResult:
        from pymatgen.analysis.phase_diagram import PDEntry

        elements = frozenset(el.symbol for el in comp.elements)
        chemsys = "-".join(sorted(elements))
        nan = float("nan")

        def empty(reason: str, covered: bool = False, correction: float = nan) -> HullResult:
            return HullResult(
                comp.reduced_formula, chemsys, nan, nan, correction, False, False, (), (),
                covered, None, reason,
            )  # fmt: skip

        lacking = sorted(elements - set(self.elemental_energies))
        if lacking:
            return empty(f"the reference has no phase of {', '.join(lacking)}")
        correction = 0.0
        if not formation and self.corrections == "mp2020":
            try:
                correction = energy_correction(item, value * comp.num_atoms) / comp.num_atoms
            except ValueError as exc:
                return empty(str(exc), covered=True)
        if formation:
            e_form = value
        elif mu is not None:
            lacking = sorted(el for el in elements if not math.isfinite(mu.get(el, nan)))
            if lacking:
                return empty(f"no elemental energy for {', '.join(lacking)}", True, correction)
            e_form = formation_energy_per_atom(comp, value + correction, mu)
        else:
            e_form = formation_energy_per_atom(comp, value + correction, self.elemental_energies)
        if not math.isfinite(e_form):
            return empty("energy is not finite", True, correction)
        scaled = e_form + _mean_energy(comp, self.elemental_energies)
        diagram = self.phase_diagram(elements)
        entry = PDEntry(comp, scaled * comp.num_atoms)
        decomposition, above = diagram.get_decomp_and_e_above_hull(
            entry, allow_negative=True, check_stable=False
        )
        products = sorted(decomposition.items(), key=lambda kv: -kv[1])
        return HullResult(
            formula=comp.reduced_formula,
            chemsys=chemsys,
            e_above_hull=float(above),
            e_form_per_atom=float(e_form),
            correction_per_atom=float(correction),
            stable_0meV=bool(above <= STABILITY_TOLERANCE),
            stable_100meV=bool(above <= 0.1 + STABILITY_TOLERANCE),
            decomposition=tuple((p.composition.reduced_formula, float(w)) for p, w in products),
            decomposition_ids=tuple(str(p.attribute) for p, _ in products),
            covered=True,
            complete=None if self.completeness is None else bool(self.completeness(elements)),
        )


def _composition(item: Structure | Composition | str) -> Composition:
    from pymatgen.core import Composition, Structure

    return item.composition if isinstance(item, Structure) else Composition(item)


def _mean_energy(composition: Composition | str, mu: Mapping[str, float]) -> float:
    """``Σ_el x_el μ_el`` (eV/atom)."""
    return -formation_energy_per_atom(composition, 0.0, mu)


def hull_stage(
    model: torch.nn.Module,
    *,
    device: str = "cpu",
    dtype: str = "float64",
    reference: Literal["mp", "mlff"] | ReferenceHull | str | Path = "mp",
    corrections: Corrections = "none",
    fmax: float = 0.05,
    max_steps: int = 500,
    elemental: Literal["auto", "relaxed", "reference"] = "auto",
) -> Callable[[Sequence[Structure], Sequence[float]], list[dict[str, Any]]]:
    """The screening pipeline's hull stage: ``stage(structures, energies) -> [row dict]``, with
    ``energies`` the potential's total energies (eV) of the relaxed ``structures``.

    Args:
        model: the potential that relaxed the candidates.
        device, dtype: where and in which precision the references are relaxed.
        reference: ``"mp"`` (:meth:`ReferenceHull.from_mp`; the potential's ``μ^pot`` come from
            its relaxed elemental structures, relaxed once per element on first need),
            ``"mlff"`` (:class:`~matgen.screen.mlff_hull.MLFFHull`), a ``ReferenceHull``
            (candidate energies taken in its scale), or a path to a ``ComputedEntry`` JSON.
        corrections: see the module docstring.
        fmax, max_steps: relaxation settings for reference structures.
        elemental: where the candidates' elemental energies come from with ``reference="mp"``:
            ``"relaxed"`` (``μ^pot``, the potential's relaxed elemental structures),
            ``"reference"`` (the potential's energies are already on MP's elemental scale, as
            for a potential trained on MP formation energies put on that scale, e.g.
            ``mace-mp20-energies``: MP's ``μ_el`` apply, nothing is relaxed), or ``"auto"``
            (``"reference"`` when the potential's metadata says ``energy_scale: mp``).

    Nothing is read or relaxed until the first call.
    """
    if elemental not in ("auto", "relaxed", "reference"):
        raise ValueError(f"elemental must be auto, relaxed or reference, not {elemental!r}")
    if elemental == "auto":
        elemental = "reference" if potential_energy_scale(model) == "mp" else "relaxed"
    from matgen.screen.mlff_hull import MLFFHull, relaxed_energies

    energy_fn = relaxed_energies(model, device=device, dtype=dtype, fmax=fmax, max_steps=max_steps)
    state: dict[str, Any] = {}

    def stage(structures: Sequence[Structure], energies: Sequence[float]) -> list[dict[str, Any]]:
        if "hull" not in state:
            if isinstance(reference, ReferenceHull):
                state["hull"] = reference
            elif reference == "mp":
                state["hull"] = ReferenceHull.from_mp(corrections=corrections)
                if elemental == "relaxed":
                    state["mu"] = MLFFHull(energy_fn, state["hull"], corrections=corrections)
            elif reference == "mlff":
                state["hull"] = MLFFHull.from_mp(energy_fn, corrections=corrections)
            else:
                state["hull"] = ReferenceHull.from_entries(reference, corrections=corrections)
        hull: ReferenceHull = state["hull"]
        per_atom = [float(e) / len(s) for s, e in zip(structures, energies, strict=True)]
        mu = None
        if "mu" in state:
            elements = {el.symbol for s in structures for el in s.composition.elements}
            mu = state["mu"].potential_elemental_energies(elements)
        return [r.as_dict() for r in hull.e_above_hull(structures, per_atom, elemental_energies=mu)]

    return stage


def potential_energy_scale(model: torch.nn.Module) -> str | None:
    """The elemental scale a potential's energies were trained on, from its metadata
    (``energy_scale``: ``"mp"`` for MP formation energies on MP's elemental scale), or None."""
    metadata = getattr(model, "metadata", None) or {}
    scale = metadata.get("energy_scale")
    return str(scale) if scale is not None else None
