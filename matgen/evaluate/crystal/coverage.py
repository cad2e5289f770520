"""Coverage recall and precision (COV-R / COV-P), as CDVAE defines them.

With ``d_s`` the Euclidean distance between structure fingerprints and ``d_c`` between scaled
composition fingerprints (see :mod:`matgen.evaluate.crystal.fingerprints`):

- COV-R: the fraction of reference crystals with some generated crystal within both cutoffs;
- COV-P: the number of generated crystals with some reference crystal within both cutoffs,
  divided by the number of *all* generated crystals (including those whose fingerprint failed).

Only generated crystals with a fingerprint take part in the distances. The cutoffs ``(structure,
composition)`` are CDVAE's: MP-20 (0.4, 10), Perov-5 and Carbon-24 (0.2, 4).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from matgen.evaluate.crystal.fingerprints import CrystalFingerprints, scale_composition_fingerprints

__all__ = ["COVERAGE_CUTOFFS", "coverage"]

COVERAGE_CUTOFFS: dict[str, tuple[float, float]] = {
    "mp_20": (0.4, 10.0),
    "mpts_52": (0.4, 10.0),
    "perov_5": (0.2, 4.0),
    "carbon_24": (0.2, 4.0),
}


def _min_distances(
    a: np.ndarray, b: np.ndarray, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Row minima (len a) and column minima (len b) of cdist(a, b), in blocks to bound memory."""
    row_min = np.full(len(a), np.inf)
    col_min = np.full(len(b), np.inf)
    for start in range(0, len(a), block):
        d = cdist(a[start : start + block], b)
        row_min[start : start + block] = d.min(axis=1)
        np.minimum(col_min, d.min(axis=0), out=col_min)
    return row_min, col_min


def coverage(
    generated: CrystalFingerprints,
    reference: CrystalFingerprints,
    *,
    structure_cutoff: float,
    composition_cutoff: float,
) -> dict[str, float]:
    """COV-R, COV-P and the mean minimum distances (AMSD / AMCD) of CDVAE."""
    n_generated = len(generated.ok)
    keep = generated.ok
    gen_s, gen_c = (
        generated.structure[keep],
        scale_composition_fingerprints(generated.composition[keep]),
    )
    ref_s, ref_c = (
        reference.structure[reference.ok],
        scale_composition_fingerprints(reference.composition[reference.ok]),
    )
    if len(gen_s) == 0 or len(ref_s) == 0:
        return {"cov_recall": 0.0, "cov_precision": 0.0}
    # As in CDVAE, the two nearest-neighbour distances are taken separately (they may come from
    # different crystals) and both must be within their cutoffs.
    struct_prec, struct_rec = _min_distances(gen_s, ref_s)
    comp_prec, comp_rec = _min_distances(gen_c, ref_c)
    recall_hit = (struct_rec <= structure_cutoff) & (comp_rec <= composition_cutoff)
    precision_hit = (struct_prec <= structure_cutoff) & (comp_prec <= composition_cutoff)
    return {
        "cov_recall": float(recall_hit.mean()),
        "cov_precision": float(precision_hit.sum() / n_generated),
        "amsd_recall": float(struct_rec.mean()),
        "amsd_precision": float(struct_prec.mean()),
        "amcd_recall": float(comp_rec.mean()),
        "amcd_precision": float(comp_prec.mean()),
    }
