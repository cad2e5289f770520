"""Crystal evaluation: validity, coverage, property distributions, uniqueness, novelty, S.U.N.
and crystal structure prediction, with the CDVAE / DiffCSP / MatterGen definitions.

De novo generation (:func:`evaluate_crystals`), in CDVAE's protocol:

- validity over *all* samples: structural, compositional (SMACT), and overall (both, and a
  structure fingerprint that can be computed);
- COV-R / COV-P against a test set (:mod:`matgen.evaluate.crystal.coverage`);
- Wasserstein distances of density (g/cm^3) and of the number of distinct elements between
  ``n_wdist_samples`` valid samples (drawn with ``seed``) and the test set;
- uniqueness and novelty among valid samples, against a reference (training) set;
- S.U.N. (stable, unique, novel) rates over all samples when energies above hull are given, at
  each stability threshold.

Crystal structure prediction (:func:`evaluate_csp`): match rate and normalised RMSE, best of k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matgen.evaluate.crystal.coverage import COVERAGE_CUTOFFS, coverage
from matgen.evaluate.crystal.fingerprints import (
    CrystalFingerprints,
    crystal_fingerprints,
    reference_cache_path,
)
from matgen.evaluate.crystal.matching import (
    CSP_MATCHER,
    UN_MATCHER,
    MatcherSettings,
    csp_match,
    uniqueness_and_novelty,
)
from matgen.evaluate.crystal.validity import reduced_composition, smact_validity, structure_validity
from matgen.evaluate.report import EvaluationReport, InvalidSample

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure

__all__ = [
    "CrystalEvalSettings",
    "CrystalValidity",
    "crystal_validity",
    "evaluate_crystals",
    "evaluate_csp",
    "reference_set",
]


@dataclass(frozen=True)
class CrystalEvalSettings:
    """Every setting that changes a published crystal number.

    Attributes:
        coverage_cutoffs: (structure, composition) fingerprint-distance cutoffs; None: by
            ``dataset`` (MP-20 0.4 / 10, Perov-5 and Carbon-24 0.2 / 4).
        dataset: which data set's cutoffs apply.
        distance_cutoff: minimum interatomic distance for structural validity, Å.
        min_volume: minimum cell volume for structural validity, Å^3.
        n_wdist_samples: valid samples drawn for the Wasserstein distances.
        seed: seed of that draw.
        matcher: StructureMatcher tolerances for uniqueness and novelty.
        stability_thresholds: energy-above-hull thresholds (eV/atom) for S.U.N.
        fingerprint_symprec: None fingerprints every site (CDVAE, exact); a tolerance in Å
            fingerprints one site per symmetry orbit (faster, equal up to CrystalNN noise).
        fingerprint_timeout: seconds one sample's CrystalNN fingerprint may take before the
            sample counts as a failed fingerprint (invalid); None: no limit.
    """

    dataset: str = "mp_20"
    coverage_cutoffs: tuple[float, float] | None = None
    distance_cutoff: float = 0.5
    min_volume: float = 0.1
    n_wdist_samples: int = 1000
    seed: int = 0
    matcher: MatcherSettings = UN_MATCHER
    stability_thresholds: tuple[float, ...] = (0.0, 0.1)
    fingerprint_symprec: float | None = None
    fingerprint_timeout: float | None = 60.0

    def cutoffs(self) -> tuple[float, float]:
        if self.coverage_cutoffs is not None:
            return self.coverage_cutoffs
        if self.dataset not in COVERAGE_CUTOFFS:
            raise ValueError(f"no coverage cutoffs for {self.dataset!r}; pass coverage_cutoffs")
        return COVERAGE_CUTOFFS[self.dataset]


@dataclass
class CrystalValidity:
    """Per-sample validity flags of ``n`` samples and the usable structures (None where a sample
    could not even be built)."""

    structures: list[Structure | None]
    structural: np.ndarray
    compositional: np.ndarray
    invalid: list[InvalidSample] = field(default_factory=list)


def _to_structure(sample: Any, item: str) -> Structure:
    from pymatgen.core import Structure

    from matgen.data.convert import arrays_to_structure, atoms_to_arrays, structure_to_arrays

    if sample is None:
        raise ValueError("no structure")
    if isinstance(sample, Structure):
        structure_to_arrays(sample, item=item)  # validates: elements, finite, cell
        return sample
    return arrays_to_structure(*atoms_to_arrays(sample, item=item))


def crystal_validity(
    samples: Sequence[Structure | Atoms | None],
    *,
    ids: Sequence[str] | None = None,
    distance_cutoff: float = 0.5,
    min_volume: float = 0.1,
) -> CrystalValidity:
    """Structural and compositional validity of each sample; unbuildable samples (None, no atoms,
    NaN coordinates, unknown elements, degenerate cells) are invalid with a reason."""
    from matgen.data.errors import DataError

    names = list(ids) if ids is not None else [str(i) for i in range(len(samples))]
    structures: list[Structure | None] = []
    structural = np.zeros(len(samples), dtype=bool)
    compositional = np.zeros(len(samples), dtype=bool)
    invalid: list[InvalidSample] = []
    for i, (sample, name) in enumerate(zip(samples, names, strict=True)):
        try:
            structure = _to_structure(sample, name)
        except (DataError, ValueError) as exc:
            structures.append(None)
            invalid.append(InvalidSample(i, name, getattr(exc, "reason", str(exc))))
            continue
        structures.append(structure)
        structural[i] = structure_validity(structure, cutoff=distance_cutoff, min_volume=min_volume)
        compositional[i] = smact_validity(*reduced_composition(structure.atomic_numbers))
        if not structural[i]:
            invalid.append(
                InvalidSample(
                    i,
                    name,
                    f"atoms closer than {distance_cutoff} Å or volume below {min_volume} Å^3",
                )
            )
        elif not compositional[i]:
            invalid.append(
                InvalidSample(
                    i,
                    name,
                    "no charge-neutral, electronegativity-consistent oxidation states (SMACT)",
                )
            )
    return CrystalValidity(structures, structural, compositional, invalid)


def reference_set(
    name: str, splits: Sequence[str]
) -> tuple[list[Structure], list[tuple[str, str]]]:
    """Structures of registered splits, with ``(sha256, split)`` keys for fingerprint caches."""
    from matgen.data import get_spec, load_dataset

    spec = get_spec(name)
    structures, keys = [], []
    for split in splits:
        dataset = load_dataset(name, split, progress=False)
        structures += dataset.structures()
        keys.append((spec.file(split).sha256, split))
    return structures, keys


def _fingerprints_of_split(
    name: str, split: str, symprec: float | None, workers: int | None, progress: bool
) -> tuple[list[Structure], CrystalFingerprints]:
    structures, keys = reference_set(name, [split])
    path = reference_cache_path(*keys[0], symprec=symprec)
    return structures, crystal_fingerprints(
        structures, symprec=symprec, workers=workers, progress=progress, cache_path=path
    )


def evaluate_crystals(
    samples: Sequence[Structure | Atoms | None],
    *,
    ids: Sequence[str] | None = None,
    test: str | Sequence[Structure] | None = None,
    reference: str | Sequence[Structure] | None = None,
    e_above_hull: Sequence[float] | None = None,
    settings: CrystalEvalSettings = CrystalEvalSettings(),
    workers: int | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Evaluate generated crystals.

    Args:
        samples: generated crystals (pymatgen ``Structure`` or ASE ``Atoms``; None for a failed
            sample, which counts as invalid).
        ids: names for the samples in the report (default: their positions).
        test: registered data set name (its ``test`` split, fingerprints cached) or structures:
            the reference for coverage and Wasserstein distances; None skips those metrics.
        reference: registered data set name (``train`` + ``val``) or structures for novelty;
            None skips uniqueness and novelty.
        e_above_hull: energy above hull of each sample (eV/atom, NaN if unknown) for S.U.N.
        settings: the settings that change published numbers.
        workers: processes for fingerprints and matching (default: all CPUs).
        progress: show progress bars.
    """
    n = len(samples)
    validity = crystal_validity(
        samples, ids=ids, distance_cutoff=settings.distance_cutoff, min_volume=settings.min_volume
    )
    built = [i for i, s in enumerate(validity.structures) if s is not None]
    fingerprints = crystal_fingerprints(
        [validity.structures[i] for i in built],
        symprec=settings.fingerprint_symprec,
        workers=workers,
        progress=progress,
        timeout=settings.fingerprint_timeout,
    )
    fingerprint_ok = np.zeros(n, dtype=bool)
    fingerprint_ok[built] = fingerprints.ok
    valid = validity.structural & validity.compositional & fingerprint_ok
    metrics: dict[str, float | int | None] = {
        "struct_valid": float(validity.structural.mean()) if n else 0.0,
        "comp_valid": float(validity.compositional.mean()) if n else 0.0,
        "valid": float(valid.mean()) if n else 0.0,
    }
    report_settings: dict[str, Any] = {
        "distance_cutoff_A": settings.distance_cutoff,
        "min_volume_A3": settings.min_volume,
        "validity_denominator": "all samples",
        "fingerprint_sites": "all"
        if settings.fingerprint_symprec is None
        else f"one per orbit (symprec {settings.fingerprint_symprec} Å)",
        "smact": "charge neutrality + Pauling test, <= 1e7 oxidation-state combinations, metal alloys valid",
        "fingerprint_timeout_s": settings.fingerprint_timeout,
    }
    notes: list[str] = []
    counts = {
        "n_samples": n,
        "n_built": len(built),
        "n_valid": int(valid.sum()),
        "n_fingerprint_timeouts": int(fingerprints.timed_out.sum()),
    }
    invalid = list(validity.invalid)
    names = list(ids) if ids is not None else [str(i) for i in range(n)]
    for k, i in enumerate(built):
        if fingerprints.timed_out[k]:
            reason = f"CrystalNN fingerprint took over {settings.fingerprint_timeout:g} s"
            invalid.append(InvalidSample(i, names[i], reason))
        elif not fingerprints.ok[k]:
            invalid.append(InvalidSample(i, names[i], "CrystalNN fingerprint failed"))
    invalid.sort(key=lambda sample: sample.index)

    run = _Run(validity, fingerprints, built, np.flatnonzero(valid), settings, workers, progress)
    if test is not None:
        _test_metrics(run, test, metrics, report_settings, notes)
    if reference is not None:
        _novelty_metrics(run, reference, e_above_hull, metrics, report_settings, counts)
    return EvaluationReport("crystals", metrics, report_settings, counts, invalid, notes)


@dataclass
class _Run:
    """State shared by the metric groups of one :func:`evaluate_crystals` call."""

    validity: CrystalValidity
    fingerprints: CrystalFingerprints
    built: list[int]
    valid_index: np.ndarray
    settings: CrystalEvalSettings
    workers: int | None
    progress: bool


def _test_metrics(
    run: _Run,
    test: str | Sequence[Structure],
    metrics: dict,
    report_settings: dict,
    notes: list[str],
) -> None:
    validity, fingerprints, built, valid_index = (
        run.validity,
        run.fingerprints,
        run.built,
        run.valid_index,
    )
    settings, workers, progress = run.settings, run.workers, run.progress
    from scipy.stats import wasserstein_distance

    if isinstance(test, str):
        test_structures, test_fp = _fingerprints_of_split(
            test, "test", settings.fingerprint_symprec, workers, progress
        )
        report_settings["test_set"] = f"{test}/test ({len(test_structures)} crystals)"
    else:
        test_structures = list(test)
        test_fp = crystal_fingerprints(
            test_structures,
            symprec=settings.fingerprint_symprec,
            workers=workers,
            progress=progress,
        )
        report_settings["test_set"] = f"{len(test_structures)} given crystals"
    # COV over every built sample; the denominator of COV-P is all samples (CDVAE).
    n_samples = len(validity.structures)
    padded = CrystalFingerprints(
        structure=np.vstack(
            [
                fingerprints.structure,
                np.full((n_samples - len(built), fingerprints.structure.shape[1]), np.nan),
            ]
        ),
        composition=np.vstack(
            [
                fingerprints.composition,
                np.full((n_samples - len(built), fingerprints.composition.shape[1]), np.nan),
            ]
        ),
        ok=np.concatenate([fingerprints.ok, np.zeros(n_samples - len(built), dtype=bool)]),
    )
    structure_cutoff, composition_cutoff = settings.cutoffs()
    metrics.update(
        coverage(
            padded,
            test_fp,
            structure_cutoff=structure_cutoff,
            composition_cutoff=composition_cutoff,
        )
    )
    report_settings["coverage_cutoffs"] = {
        "structure": structure_cutoff,
        "composition": composition_cutoff,
    }
    report_settings["cov_precision_denominator"] = "all samples"

    rng = np.random.default_rng(settings.seed)
    if len(valid_index) >= settings.n_wdist_samples:
        drawn = rng.choice(valid_index, settings.n_wdist_samples, replace=False)
    else:
        drawn = valid_index
        notes.append(
            f"only {len(valid_index)} valid samples for the Wasserstein distances (asked for {settings.n_wdist_samples})"
        )
    chosen = [validity.structures[i] for i in drawn]
    if chosen:
        metrics["wdist_density"] = float(
            wasserstein_distance([s.density for s in chosen], [s.density for s in test_structures])
        )
        metrics["wdist_num_elems"] = float(
            wasserstein_distance(
                [len(s.composition.elements) for s in chosen],
                [len(s.composition.elements) for s in test_structures],
            )
        )
    report_settings["wdist_samples"] = len(chosen)
    report_settings["wdist_seed"] = settings.seed


def _novelty_metrics(
    run: _Run,
    reference: str | Sequence[Structure],
    e_above_hull: Sequence[float] | None,
    metrics: dict,
    report_settings: dict,
    counts: dict,
) -> None:
    validity, valid_index, settings = run.validity, run.valid_index, run.settings
    workers, progress = run.workers, run.progress
    if isinstance(reference, str):
        references, _ = reference_set(reference, ["train", "val"])
        report_settings["novelty_reference"] = f"{reference}/train+val ({len(references)} crystals)"
    else:
        references = list(reference)
        report_settings["novelty_reference"] = f"{len(references)} given crystals"
    valid_structures = [validity.structures[i] for i in valid_index]
    unique_v, novel_v = uniqueness_and_novelty(
        valid_structures, references, settings=settings.matcher, workers=workers, progress=progress
    )
    n_valid = max(len(valid_index), 1)
    metrics["unique"] = float(unique_v.sum() / n_valid)
    metrics["novel"] = float(novel_v.sum() / n_valid)  # unique and matching no reference
    report_settings["uniqueness_novelty_population"] = "valid samples"
    report_settings["matcher"] = asdict(settings.matcher)
    counts["n_unique"] = int(unique_v.sum())
    counts["n_novel"] = int(novel_v.sum())
    if e_above_hull is not None:
        n = len(validity.structures)
        energies = np.asarray(e_above_hull, dtype=np.float64)
        if energies.shape != (n,):
            raise ValueError(f"e_above_hull has {energies.shape[0]} values for {n} samples")
        sun = np.zeros(n, dtype=bool)
        sun[valid_index] = novel_v
        for threshold in settings.stability_thresholds:
            stable = np.nan_to_num(energies, nan=np.inf) <= threshold + 1e-12
            metrics[f"stable@{threshold:g}"] = float(stable.mean())
            metrics[f"sun@{threshold:g}"] = float((stable & sun).mean())
        report_settings["sun_denominator"] = "all samples"
        report_settings["stability_thresholds_eV_per_atom"] = list(settings.stability_thresholds)


def evaluate_csp(
    predictions: Sequence[Sequence[Structure | Atoms | None]],
    truths: Sequence[Structure],
    *,
    gate: str | None = None,
    matcher: MatcherSettings = CSP_MATCHER,
    workers: int | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Crystal structure prediction: ``predictions[i]`` are k candidates for ``truths[i]``.

    ``gate`` None follows DiffCSP: ``both`` for k = 1 and ``prediction`` for k > 1.
    """
    k = max((len(p) for p in predictions), default=1)
    gate = gate or ("both" if k == 1 else "prediction")
    truth_validity = crystal_validity(list(truths))
    flat = [p for preds in predictions for p in preds]
    pred_validity = crystal_validity(flat)
    structures, flags, start = [], [], 0
    for preds in predictions:
        structures.append(pred_validity.structures[start : start + len(preds)])
        flags.append(
            list(
                pred_validity.structural[start : start + len(preds)]
                & pred_validity.compositional[start : start + len(preds)]
            )
        )
        start += len(preds)
    truth_valid = list(truth_validity.structural & truth_validity.compositional)
    result = csp_match(
        structures,
        list(truths),
        prediction_valid=flags,
        truth_valid=truth_valid,
        gate=gate,
        settings=matcher,
        workers=workers,
        progress=progress,
    )
    return EvaluationReport(
        "crystal-structure-prediction",
        {"match_rate": result["match_rate"], "rmse": result["rmse"]},
        {
            "matcher": asdict(matcher),
            "k": k,
            "validity_gate": gate,
            "rmse": "mean over matched of the best normalised RMS",
        },
        {
            "n_truths": len(truths),
            "n_matched": int(result["n_matched"]),
            "n_truths_valid": int(sum(truth_valid)),
        },
        pred_validity.invalid,
    )
