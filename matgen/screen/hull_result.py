"""The outcome of placing one candidate on a reference hull (see :mod:`matgen.screen.hull`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["STABILITY_TOLERANCE", "HullResult"]

STABILITY_TOLERANCE = 1e-6  # eV/atom: round-off of the hull construction


@dataclass(frozen=True)
class HullResult:
    """One candidate placed on a reference hull. Energies in eV/atom; NaN when not covered.

    Attributes:
        formula: reduced formula.
        chemsys: elements joined by ``-``, sorted.
        e_above_hull: ``ΔE_f − E_hull`` (negative: below the reference hull).
        e_form_per_atom: ``ΔE_f`` in the hull's elemental scale.
        correction_per_atom: ``ΔE^corr / N`` that was added (0 with ``corrections="none"``).
        stable_0meV: ``e_above_hull <= 0`` (within ``STABILITY_TOLERANCE``).
        stable_100meV: ``e_above_hull <= 0.1``.
        decomposition: ``((reduced formula, atomic fraction), ...)``, largest first.
        decomposition_ids: the reference entry id of each product.
        covered: the reference has every element of the chemical system, so a hull exists.
        complete: the reference holds every known hull phase of the chemical system and its
            subsystems (for the MP reference: every id MP labels as on the hull); None when the
            reference cannot tell.
        reason: why the result is NaN, else empty.
    """

    formula: str
    chemsys: str
    e_above_hull: float
    e_form_per_atom: float
    correction_per_atom: float
    stable_0meV: bool
    stable_100meV: bool
    decomposition: tuple[tuple[str, float], ...]
    decomposition_ids: tuple[str, ...]
    covered: bool
    complete: bool | None
    reason: str = ""

    def is_stable(self, threshold: float) -> bool:
        """``e_above_hull <= threshold`` (eV/atom), within ``STABILITY_TOLERANCE``."""
        return bool(self.e_above_hull <= threshold + STABILITY_TOLERANCE)

    def as_dict(self) -> dict[str, Any]:
        """Scalars for a store row (ASE-database-safe keys: ``formula`` becomes
        ``reduced_formula``); the decomposition as one string ``"0.5 A + 0.5 B"``."""
        out = asdict(self)
        out["reduced_formula"] = out.pop("formula")
        out["decomposition"] = " + ".join(f"{w:.4g} {f}" for f, w in self.decomposition)
        out["decomposition_ids"] = " ".join(self.decomposition_ids)
        if self.complete is None:
            del out["complete"]
        if not self.reason:
            del out["reason"]
        return out
