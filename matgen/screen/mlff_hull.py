"""An MLFF-consistent hull: the MP reference structures relaxed with the candidates' potential.

With reference and candidate energies from one potential, systematic errors of the potential
largely cancel and no elemental scale change is needed: for a chemical system with elements
``S`` the hull is built from the potential's energies per atom of the MP phases whose elements
are a subset of ``S`` and whose *DFT* energy above the built-in MP hull is at most ``window``
(eV/atom; phases far above the DFT hull are rarely on the potential's hull, and skipping them
saves most of the relaxations), plus each element's reference structure
(:meth:`matgen.screen.reference.MPReferenceData.elemental_structure_ids`). ``μ_el`` is the lowest
energy per atom the potential gives any of that element's structures.

Energies come from ``energy_fn(structures) -> total energies (eV)``, which the pipeline supplies
(:func:`relaxed_energies` wraps :func:`matgen.relax.relax_batched`); each reference is evaluated
once, the first time a candidate needs its chemical system. Candidates are then placed with
their own total energies per atom (``energies_per_atom`` without ``elemental_energies``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from matgen.screen.formation import Corrections, energy_correction
from matgen.screen.hull import ReferenceHull

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition, Structure

__all__ = ["EnergyFn", "MLFFHull", "relaxed_energies"]

EnergyFn = Callable[[Sequence["Structure"]], Sequence[float]]


def relaxed_energies(
    model: torch.nn.Module,
    *,
    device: str = "cpu",
    dtype: str = "float64",
    fmax: float = 0.05,
    max_steps: int = 500,
    max_atoms: int = 2048,
) -> EnergyFn:
    """``energy_fn(structures) -> total energies (eV)`` after a batched FIRE relaxation of
    positions and cell with ``model``; NaN where the relaxation failed (an unconverged one keeps
    its last energy)."""
    import torch

    from matgen.relax.fire import relax_batched

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    def energy_fn(structures: Sequence[Structure]) -> list[float]:
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
        results = relax_batched(
            model,
            atoms,
            fmax=fmax,
            max_steps=max_steps,
            max_atoms=max_atoms,
            device=device,
            dtype=torch_dtype,
        )
        return [float("nan") if r.status == "failed" else float(r.energy) for r in results]

    return energy_fn


class MLFFHull(ReferenceHull):
    """The MP reference phases with energies from ``energy_fn`` (see the module docstring).

    Args:
        energy_fn: total energies (eV) of structures, from the candidates' potential.
        dft: the built-in MP hull (:meth:`ReferenceHull.from_mp`): which phases to take, their
            structures, and whether a system is complete.
        window: largest DFT energy above hull (eV/atom) of a phase taken; ``math.inf`` takes all.
        corrections: applied to reference and candidate energies alike (see
            :mod:`matgen.screen.hull`).
    """

    def __init__(
        self,
        energy_fn: EnergyFn,
        dft: ReferenceHull,
        *,
        window: float = 0.1,
        corrections: Corrections = "none",
    ) -> None:
        if getattr(dft, "mp_data", None) is None:
            raise ValueError("dft must come from ReferenceHull.from_mp (it supplies structures)")
        super().__init__(
            [], [], name="MLFF-relaxed MP phases", corrections=corrections,
            completeness=dft.completeness,
        )  # fmt: skip
        self.energy_fn = energy_fn
        self.dft = dft
        self.window = window
        self.potential_energies: dict[str, float] = {}  # id -> eV/atom, corrections included
        self._elemental_ids = dft.mp_data.elemental_structure_ids()
        self._failed: set[str] = set()

    @classmethod
    def from_mp(
        cls,
        energy_fn: EnergyFn,
        *,
        data_root: str | Path | None = None,
        cache: str | Path | None = None,
        window: float = 0.1,
        corrections: Corrections = "none",
    ) -> MLFFHull:
        """:class:`MLFFHull` over ``ReferenceHull.from_mp(data_root, cache=cache)``."""
        dft = ReferenceHull.from_mp(data_root, cache=cache)
        return cls(energy_fn, dft, window=window, corrections=corrections)

    def potential_elemental_energies(self, elements: set[str] | frozenset[str]) -> dict[str, float]:
        """``μ^pot_el`` (eV/atom) for ``elements``: the potential's energy of each element's
        reference structure (computed on first need). Elements without a structure, or whose
        energy failed, are left out."""
        wanted = {el: self._elemental_ids[el] for el in elements if el in self._elemental_ids}
        self._compute(list(wanted.values()))
        for el, i in wanted.items():
            energy = self.potential_energies.get(i, math.nan)
            if math.isfinite(energy):
                self.elemental_energies[el] = min(self.elemental_energies.get(el, energy), energy)
        return {el: self.elemental_energies[el] for el in elements if el in self.elemental_energies}

    def phase_diagram(self, elements: frozenset[str] | Sequence[str]) -> PhaseDiagram:
        """The potential's ``PhaseDiagram`` of ``elements`` (relaxing what it lacks first)."""
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

        elements = frozenset(elements)
        diagram = self._diagrams.get(elements)
        if diagram is not None:
            return diagram
        mu = self.potential_elemental_energies(elements)
        dft = self.dft.phase_diagram(elements)
        ids = [
            str(e.attribute)
            for e in dft.all_entries
            if not str(e.attribute).startswith("mu:")
            and dft.get_e_above_hull(e, allow_negative=True) <= self.window
        ]
        self._compute(ids)
        index = {i: k for k, i in enumerate(self.dft.ids)}
        entries = [PDEntry(_composition(el), mu[el], attribute=f"mu:{el}") for el in sorted(mu)]
        for i in ids:
            energy = self.potential_energies.get(i, math.nan)
            if math.isfinite(energy):
                comp = self.dft.compositions[index[i]]
                entries.append(PDEntry(comp, energy * comp.num_atoms, attribute=i))
        return self._keep(elements, PhaseDiagram(entries))

    def _prepare(self, elements: set[str]) -> None:
        self.potential_elemental_energies(elements)

    def _compute(self, ids: Sequence[str]) -> None:
        todo = [i for i in dict.fromkeys(ids) if i not in self.potential_energies]
        todo = [i for i in todo if i not in self._failed]
        if not todo:
            return
        structures = self.dft.mp_data.structures(todo)
        self._failed.update(i for i in todo if i not in structures)
        todo = [i for i in todo if i in structures]
        if not todo:
            return
        energies = list(self.energy_fn([structures[i] for i in todo]))
        if len(energies) != len(todo):
            raise ValueError(f"energy_fn gave {len(energies)} energies for {len(todo)} structures")
        for i, energy in zip(todo, energies, strict=True):
            structure = structures[i]
            energy = float(energy)
            if math.isfinite(energy) and self.corrections == "mp2020":
                try:
                    energy += energy_correction(structure, energy)
                except ValueError:
                    energy = math.nan
            self.potential_energies[i] = energy / len(structure)


def _composition(symbol: str) -> Composition:
    from pymatgen.core import Composition

    return Composition(symbol)
