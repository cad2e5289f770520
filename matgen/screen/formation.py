"""Formation energies per atom, and the MP2020 energy corrections as a setting.

``ΔE_f = E / N − Σ_el x_el μ_el`` (eV/atom). The MP2020 scheme (pymatgen's
``MaterialsProject2020Compatibility``) adds anion corrections (oxides, peroxides, fluorides, …)
and GGA/GGA+U mixing corrections (transition metals in oxides and fluorides) to raw GGA(+U)
energies; see :mod:`matgen.screen.hull` for when a potential's energies need them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

__all__ = ["CORRECTIONS", "Corrections", "energy_correction", "formation_energy_per_atom"]

Corrections = Literal["none", "mp2020"]
CORRECTIONS = ("none", "mp2020")


def formation_energy_per_atom(
    composition: Composition | str, energy_per_atom: float, elemental_energies: Mapping[str, float]
) -> float:
    """``ΔE_f = E/N − Σ_el x_el μ_el`` (eV/atom), ``μ_el = elemental_energies[el]`` (eV/atom).

    Raises:
        KeyError: an element has no elemental energy.
    """
    from pymatgen.core import Composition

    fractions = Composition(composition).fractional_composition
    return float(energy_per_atom) - sum(
        float(x) * float(elemental_energies[el.symbol]) for el, x in fractions.items()
    )


def energy_correction(structure: Structure | Composition | str, energy: float) -> float:
    """MP2020 correction ``ΔE^corr`` (eV, total) of a raw GGA(+U)-like energy ``energy`` (eV).

    The entry gets MP's U values for its composition (so the GGA/GGA+U mixing correction applies
    where MP would have run GGA+U) and POTCAR checks off; a structure lets pymatgen tell oxides
    from peroxides and superoxides. Single elements get 0.

    Raises:
        ValueError: pymatgen found the entry incompatible (the message says why).
    """
    from pymatgen.core import Composition, Structure
    from pymatgen.entries.compatibility import CompatibilityError
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    compat = _mp2020()
    comp = structure.composition if isinstance(structure, Structure) else Composition(structure)
    if len(comp.elements) < 2:
        return 0.0
    anion = max(comp.elements, key=lambda el: el.X).symbol
    u_values = {
        el.symbol: float(compat.u_settings.get(anion, {}).get(el.symbol, 0.0)) for el in comp
    }
    hubbards = {k: v for k, v in u_values.items() if v}
    parameters = {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards}
    if isinstance(structure, Structure):
        entry = ComputedStructureEntry(structure, energy, parameters=parameters)
    else:
        entry = ComputedEntry(comp, energy, parameters=parameters)
    try:
        return float(sum(a.value for a in compat.get_adjustments(entry)))
    except CompatibilityError as exc:
        raise ValueError(f"{comp.reduced_formula}: MP2020 correction not defined: {exc}") from None


_COMPAT: list[Any] = []


def _mp2020() -> Any:
    if not _COMPAT:
        from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

        _COMPAT.append(MaterialsProject2020Compatibility(check_potcar=False))
    return _COMPAT[0]
