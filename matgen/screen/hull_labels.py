"""Agreement of computed energies above hull with MP's labels (eV/atom), and the known-MP check.

MP's labels are ``>= 0`` (MP's hull contains each labelled phase), so a computed value below the
reference hull counts as 0. Stable means ``e_above_hull <= threshold`` (labels: ``<= 1e-6``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from matgen.data.root import data_root
from matgen.screen.hull import STABILITY_TOLERANCE, HullResult, ReferenceHull
from matgen.screen.reference import load_mp_reference

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

__all__ = [
    "MP_SAMPLE_SOURCE",
    "LabelAgreement",
    "label_agreement",
    "mp_sample_with_formation_energies",
    "print_label_agreement",
]

MP_SAMPLE_SOURCE = "mp_sample_lemat/mp_baseline_sample_2473.csv.gz"


@dataclass(frozen=True)
class LabelAgreement:
    """Computed ``e_above_hull`` against labels, over ``n`` candidates.

    Attributes:
        n: candidates compared (finite prediction and label).
        mae: mean ``|max(pred, 0) − label|``, eV/atom.
        within_1meV, within_25meV: fractions with that error at most 1 and 25 meV/atom.
        f1_stable, precision_stable, recall_stable: of "stable" (``<= threshold``), label as truth.
        n_stable_labels: candidates labelled stable.
        threshold: eV/atom.
    """

    n: int
    mae: float
    within_1meV: float
    within_25meV: float
    f1_stable: float
    precision_stable: float
    recall_stable: float
    n_stable_labels: int
    threshold: float

    def summary(self) -> str:
        """One line for a log or a README table."""
        return (
            f"n={self.n}  MAE={1000 * self.mae:.1f} meV/atom  "
            f"|err|<=1meV: {self.within_1meV:.1%}  <=25meV: {self.within_25meV:.1%}  "
            f"F1(stable, <= {self.threshold:g} eV/atom)={self.f1_stable:.3f} "
            f"(P={self.precision_stable:.3f} R={self.recall_stable:.3f}, "
            f"{self.n_stable_labels} stable labels)"
        )


def label_agreement(
    predicted: Sequence[float], labels: Sequence[float], *, threshold: float = 0.0
) -> LabelAgreement:
    """Compare predicted energies above hull with labels (both eV/atom); pairs with a NaN on
    either side are left out."""
    pred = np.asarray(predicted, dtype=float)
    true = np.asarray(labels, dtype=float)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape[0]} predictions but {true.shape[0]} labels")
    keep = np.isfinite(pred) & np.isfinite(true)
    pred, true = np.maximum(pred[keep], 0.0), true[keep]
    err = np.abs(pred - true)
    p_stable = pred <= threshold + STABILITY_TOLERANCE
    t_stable = true <= threshold + STABILITY_TOLERANCE
    tp = int(np.sum(p_stable & t_stable))
    precision = tp / max(int(p_stable.sum()), 1)
    recall = tp / max(int(t_stable.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    nan = float("nan")
    return LabelAgreement(
        n=int(keep.sum()),
        mae=float(err.mean()) if err.size else nan,
        within_1meV=float(np.mean(err <= 1e-3 + STABILITY_TOLERANCE)) if err.size else nan,
        within_25meV=float(np.mean(err <= 25e-3 + STABILITY_TOLERANCE)) if err.size else nan,
        f1_stable=float(f1),
        precision_stable=float(precision),
        recall_stable=float(recall),
        n_stable_labels=int(t_stable.sum()),
        threshold=threshold,
    )


def mp_sample_with_formation_energies(root: str | Path | None = None) -> pd.DataFrame:
    """The mp_sample_lemat rows that have both MP's label and an MP formation energy.

    The sample's CSV has no energies; its ``material_id`` is joined to the MP reference table
    (MP-20 + MPTS-52 formation energies, lowest per id, :mod:`matgen.screen.reference`). The
    label file's total energies are *not* used: they mix raw r2SCAN and GGA(+U) scales.

    Returns:
        Columns ``material_id, formula, e_form, label, nsites, cif``.
    """
    root = Path(root) if root is not None else data_root()
    data = load_mp_reference(root)
    sample = pd.read_csv(
        root / MP_SAMPLE_SOURCE,
        usecols=["material_id", "nsites", "cif", "e_above_hull_mp_hyperconvexhull"],
    ).rename(columns={"e_above_hull_mp_hyperconvexhull": "label"})
    table = pd.DataFrame(
        {"material_id": data.ids, "formula": data.formulas, "e_form": data.formation_energies}
    )
    joined = sample.merge(table, on="material_id", how="inner").dropna(subset=["label", "e_form"])
    columns = ["material_id", "formula", "e_form", "label", "nsites", "cif"]
    return joined[columns].reset_index(drop=True)


def print_label_agreement(
    hull: ReferenceHull,
    items: Sequence[Structure | Composition | str],
    energies_per_atom: Sequence[float],
    labels: Sequence[float],
    *,
    elemental_energies: Mapping[str, float] | None = None,
    complete_only: bool = False,
    thresholds: Sequence[float] = (0.0, 0.1),
    out: Callable[[str], None] = print,
) -> tuple[list[HullResult], dict[float, LabelAgreement]]:
    """Place a potential's energies (eV/atom) of known structures on ``hull`` and print MAE and
    stable-classification F1 against ``labels`` (eV/atom), one line per threshold.

    Args:
        elemental_energies: the potential's ``μ^pot`` (eV/atom), when ``hull`` is in another
            scale (the built-in MP hull); see :meth:`ReferenceHull.e_above_hull`.
        complete_only: compare only candidates whose chemical system the reference holds
            completely (``HullResult.complete``).

    Returns:
        The hull results and the agreement per threshold.
    """
    results = hull.e_above_hull(items, energies_per_atom, elemental_energies=elemental_energies)
    keep = [r.covered and (r.complete or not complete_only) for r in results]
    predicted = [r.e_above_hull for r, k in zip(results, keep, strict=True) if k]
    truth = [float(v) for v, k in zip(labels, keep, strict=True) if k]
    agreement = {t: label_agreement(predicted, truth, threshold=t) for t in thresholds}
    out(f"{hull.name}: {sum(keep)} of {len(results)} candidates placed")
    for line in agreement.values():
        out("  " + line.summary())
    return results, agreement
