"""The MOSES metrics for string molecules (SMILES or SELFIES), with MOSES's definitions.

Polykovskiy et al., "Molecular Sets (MOSES)", Front. Pharmacol. 11, 565644 (2020); the reference
implementation is ``moses/metrics/metrics.py`` in molecularsets/moses. For ``n`` generated strings:

- ``valid``: fraction that RDKit parses and sanitizes (see
  :func:`matgen.evaluate.molecule_features.parse_smiles`); everything below uses the valid ones
  only, duplicates included, through their canonical SMILES.
- ``unique@k``: ``|set(first k valid canonical SMILES)| / min(k, n_valid)``. With fewer than
  ``k`` valid molecules it is taken over all of them, as MOSES does, and a note says so.
- ``FCD/<set>``: Fréchet distance between Gaussians fitted to the ChemNet penultimate
  activations (package ``fcd``, canonical SMILES, padded to 350 tokens) of the valid generated
  and the reference molecules: ``|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2))``.
- ``SNN/<set>``: mean over generated molecules of the highest Tanimoto similarity to any
  reference molecule (Morgan fingerprints, radius 2, 1024 bits).
- ``Frag/<set>``, ``Scaf/<set>``: cosine similarity of the BRICS-fragment and the
  Bemis–Murcko-scaffold (at least two rings) count vectors of the two sets.
- ``IntDiv``, ``IntDiv2``: ``1 - (1/n) sum_i ((1/n) sum_j T(i, j)^p)^(1/p)`` over all ordered
  pairs of valid generated molecules, self-pairs included, with ``p = 1`` and ``p = 2``.
- ``logP``, ``SA``, ``QED``, ``weight``: 1-D Wasserstein distances between the property
  values of the generated and the test molecules (``scipy.stats.wasserstein_distance``).
- ``Novelty``: fraction of the unique valid canonical SMILES that are not in the training set.
  The training set is canonicalized the same way first (MOSES compares with its raw strings,
  which current RDKit no longer writes identically in about 0.1% of cases).

``<set>`` is ``Test`` (the test set) and ``TestSF`` (the scaffold-split test set). A Tanimoto
similarity of two empty fingerprints is 1. MOSES's ``Filters`` metric needs its MCF/PAINS rule
files and is not computed.

Reference statistics (fingerprints, fragment and scaffold counts, property values, ChemNet mean
and covariance) and the canonical training set are cached as ``.npz`` / gzip'd text under
``matgen.data.root.cache_dir() / "moses_metrics"``, keyed by the sha256 of the reference
file (or of the SMILES list) and the versions of RDKit and ``fcd``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rdkit
import torch
from scipy.stats import wasserstein_distance

from matgen.data.catalog import get_spec
from matgen.data.datasets import SmilesDataset, load_dataset
from matgen.data.errors import DataError
from matgen.data.integrity import sha256_file
from matgen.data.root import cache_dir, data_root
from matgen.data.smiles import read_smiles_csv
from matgen.evaluate.molecule_features import (
    CHEMNET_PAD_LENGTH,
    MORGAN_BITS,
    MORGAN_RADIUS,
    PROPERTY_NAMES,
    SCAFFOLD_MIN_RINGS,
    MoleculeFeatures,
    canonicalize_chunk,
    chemnet_statistics,
    cosine_similarity,
    default_n_jobs,
    featurize_chunk,
    featurize_samples,
    internal_diversity,
    map_chunks,
    nearest_neighbour_similarity,
)
from matgen.evaluate.report import EvaluationReport

__all__ = [
    "ReferenceSet",
    "ReferenceStatistics",
    "canonical_set",
    "evaluate_smiles",
    "reference_statistics",
]

MoleculeSource = Sequence[str] | SmilesDataset | str | os.PathLike[str] | None

_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ReferenceSet:
    """A reference set of SMILES: a label, the sha256 of its content, and a reader."""

    label: str
    sha256: str
    read: Callable[[], list[str]]

    @classmethod
    def resolve(cls, source: MoleculeSource, moses_split: str) -> ReferenceSet | None:
        """From an argument of :func:`evaluate_smiles`; None when ``source`` is empty.

        None is the MOSES split from the data root (keyed by the registry's file sha256), a
        path is a SMILES CSV (keyed by its sha256), a sequence is keyed by the sha256 of its
        newline-joined strings.
        """
        if source is None:
            spec = get_spec("moses").file(moses_split)
            path = data_root() / spec.path
            if not path.is_file():
                raise DataError(
                    f"MOSES {moses_split} set not found: set MATGEN_DATA to the data root, or "
                    f"pass {moses_split}=<SMILES list or CSV path> ({moses_split}=[] skips it)",
                    path=path,
                )
            return cls(f"moses/{moses_split}", spec.sha256, functools.partial(_moses, moses_split))
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise DataError("reference SMILES file not found", path=path)
            return cls(str(path), sha256_file(path), functools.partial(_read_csv, path))
        smiles = list(source.smiles if isinstance(source, SmilesDataset) else source)
        if not smiles:
            return None
        digest = hashlib.sha256("\n".join(map(str, smiles)).encode()).hexdigest()
        return cls(f"{len(smiles)} given SMILES", digest, lambda: smiles)

    def describe(self) -> str:
        return f"{self.label} (sha256 {self.sha256[:16]})"


@dataclass
class ReferenceStatistics:
    """What the metrics need from a reference set, computed once and cached.

    Attributes:
        fingerprints: (n, 128) uint8, Morgan bits packed little-endian.
        fragments: BRICS fragment SMILES -> count over the set.
        scaffolds: scaffold SMILES -> count over the set.
        properties: property name -> (n,) float64 values (``PROPERTY_NAMES``).
        fcd_mu: (512,) mean ChemNet activation, or None when ``fcd`` is not installed.
        fcd_sigma: (512, 512) covariance of the activations, or None.
        n_invalid: reference strings that failed to parse (left out).
        meta: the source and the versions that produced the statistics.
    """

    fingerprints: np.ndarray
    fragments: dict[str, int]
    scaffolds: dict[str, int]
    properties: dict[str, np.ndarray]
    fcd_mu: np.ndarray | None = None
    fcd_sigma: np.ndarray | None = None
    n_invalid: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_molecules(self) -> int:
        return len(self.fingerprints)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` (no pickles) atomically."""
        arrays = {
            "fingerprints": self.fingerprints,
            "fragment_smiles": np.array(list(self.fragments), dtype=str),
            "fragment_counts": np.array(list(self.fragments.values()), dtype=np.int64),
            "scaffold_smiles": np.array(list(self.scaffolds), dtype=str),
            "scaffold_counts": np.array(list(self.scaffolds.values()), dtype=np.int64),
            "fcd_mu": np.zeros(0) if self.fcd_mu is None else self.fcd_mu,
            "fcd_sigma": np.zeros((0, 0)) if self.fcd_sigma is None else self.fcd_sigma,
            "n_invalid": np.array(self.n_invalid),
            "meta": np.array(json.dumps(self.meta)),
            **{f"property_{k}": v for k, v in self.properties.items()},
        }
        _atomic_write(Path(path), lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceStatistics:
        with np.load(path, allow_pickle=False) as z:
            counts = {
                name: dict(
                    zip(z[f"{name}_smiles"].tolist(), z[f"{name}_counts"].tolist(), strict=True)
                )
                for name in ("fragment", "scaffold")
            }
            return cls(
                fingerprints=z["fingerprints"],
                fragments=counts["fragment"],
                scaffolds=counts["scaffold"],
                properties={k: z[f"property_{k}"] for k in PROPERTY_NAMES},
                fcd_mu=z["fcd_mu"] if z["fcd_mu"].size else None,
                fcd_sigma=z["fcd_sigma"] if z["fcd_sigma"].size else None,
                n_invalid=int(z["n_invalid"]),
                meta=json.loads(str(z["meta"])),
            )


def evaluate_smiles(
    samples: Iterable[str] | SmilesDataset,
    *,
    train: MoleculeSource = None,
    test: MoleculeSource = None,
    test_scaffolds: MoleculeSource = None,
    representation: str = "smiles",
    unique_k: Sequence[int] = (1000, 10000),
    n_jobs: int | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    use_cache: bool = True,
) -> EvaluationReport:
    """Score generated molecules with the MOSES metrics (see the module docstring).

    The first call with a new reference set computes its statistics (MOSES test: about five
    minutes on two cores; canonicalizing MOSES train: several minutes) and caches them.

    Args:
        samples: generated SMILES or SELFIES strings, in generation order (``unique@k`` takes
            the first ``k`` valid ones).
        train: training set for novelty. None: MOSES train from the data root; else a path
            to a SMILES CSV, a list of SMILES or a :class:`SmilesDataset`; ``[]`` skips it.
        test: reference for the ``/Test`` metrics and the property distances; same forms,
            None is MOSES test.
        test_scaffolds: reference for the ``/TestSF`` metrics; None is MOSES test_scaffolds.
        representation: ``"smiles"`` or ``"selfies"`` (decoded with the ``selfies`` package).
        unique_k: the ``k`` values of ``unique@k``.
        n_jobs: worker processes for the RDKit work (default: the cores this process may use).
        device: torch device for ChemNet and the Tanimoto products.
        seed: the generator's sampling seed, recorded in the settings (the metrics are
            deterministic).
        use_cache: read and write cached reference statistics.

    Returns:
        An :class:`EvaluationReport` with task ``"smiles"`` and MOSES's metric names
        (``valid``, ``unique@1000``, ``FCD/Test``, ``SNN/TestSF``, ``IntDiv2``, ``logP``,
        ``Novelty``, …). Strings that do not decode or parse are in ``invalid``, with reasons.

    Raises:
        DataError: a reference set cannot be found or read.
    """
    if representation not in ("smiles", "selfies"):
        raise ValueError(f"representation must be 'smiles' or 'selfies', not {representation!r}")
    items = list(samples.smiles if isinstance(samples, SmilesDataset) else samples)
    n_jobs = default_n_jobs() if n_jobs is None else max(1, int(n_jobs))
    device = torch.device(device)
    timer = _Timer()
    valid, invalid = featurize_samples(items, representation=representation, n_jobs=n_jobs)
    gen = _GeneratedSet(valid, device, n_jobs)
    timer.lap("parse")

    settings = _settings(representation, unique_k, n_jobs, device, seed)
    counts = {"n_samples": len(items), "n_valid": len(valid), "n_invalid": len(invalid)}
    notes: list[str] = [] if valid else ["no valid molecules: the set metrics are None"]
    metrics: dict[str, float | int | None] = {"valid": len(valid) / len(items) if items else None}
    canonical = [f.canonical for f in valid]
    counts["n_unique_valid"] = len(set(canonical))
    for k in unique_k:
        head = canonical[:k]
        metrics[f"unique@{k}"] = len(set(head)) / len(head) if head else None
        counts[f"unique@{k}_denominator"] = len(head)
        if 0 < len(head) < k:
            notes.append(f"unique@{k}: only {len(head)} valid molecules, taken over all (MOSES)")

    test_stats = None
    for suffix, source, split in (
        ("Test", test, "test"),
        ("TestSF", test_scaffolds, "test_scaffolds"),
    ):
        ref = ReferenceSet.resolve(source, split)
        settings[f"{split}_set"] = None if ref is None else ref.describe()
        names = [f"{m}/{suffix}" for m in ("FCD", "SNN", "Frag", "Scaf")]
        if ref is None:
            metrics.update(dict.fromkeys(names))
            notes.append(f"{suffix} metrics skipped: the {split} set given is empty")
            continue
        stats = reference_statistics(ref, n_jobs=n_jobs, device=device, use_cache=use_cache)
        timer.lap(f"reference {suffix}")
        counts[f"n_{split}"] = stats.n_molecules
        if stats.n_invalid:
            notes.append(f"{ref.label}: {stats.n_invalid} SMILES do not parse and were left out")
        metrics.update(zip(names, gen.compare(stats, suffix, notes), strict=True))
        test_stats = stats if suffix == "Test" else test_stats
        timer.lap(f"metrics {suffix}")

    for p, name in ((1, "IntDiv"), (2, "IntDiv2")):
        metrics[name] = internal_diversity(gen.fingerprints, p=p, device=device) if valid else None
    timer.lap("IntDiv")
    for j, name in enumerate(PROPERTY_NAMES):
        metrics[name] = None
        if test_stats is not None and valid:
            ref_values, gen_values = test_stats.properties[name], gen.properties[:, j]
            if n_missing := int((~np.isfinite(gen_values)).sum()):
                notes.append(f"{name}: no value for {n_missing} valid molecules, left out")
            ref_values = ref_values[np.isfinite(ref_values)]
            gen_values = gen_values[np.isfinite(gen_values)]
            if len(ref_values) and len(gen_values):
                metrics[name] = float(wasserstein_distance(ref_values, gen_values))

    train_ref = ReferenceSet.resolve(train, "train")
    settings["train_set"] = None if train_ref is None else train_ref.describe()
    metrics["Novelty"] = None
    if train_ref is None:
        notes.append("Novelty skipped: the train set given is empty")
    elif valid:
        train_set = canonical_set(train_ref, n_jobs=n_jobs, use_cache=use_cache)
        counts["n_train_canonical"] = len(train_set)
        unique = set(canonical)
        metrics["Novelty"] = len(unique - train_set) / len(unique)
    if test_stats is None:
        notes.append("property distances need a test set: skipped")
    timer.lap("Novelty")
    notes.append(f"seconds per stage: {timer}")
    return EvaluationReport(
        task="smiles",
        metrics=metrics,
        settings=settings,
        counts=counts,
        invalid=invalid,
        notes=notes,
    )


def reference_statistics(
    reference: ReferenceSet | MoleculeSource,
    *,
    n_jobs: int | None = None,
    device: str | torch.device = "cpu",
    use_cache: bool = True,
) -> ReferenceStatistics:
    """Statistics of a reference set (None: MOSES test), read from the cache when present."""
    ref = (
        reference
        if isinstance(reference, ReferenceSet)
        else ReferenceSet.resolve(reference, "test")
    )
    if ref is None:
        raise ValueError("an empty reference set has no statistics")
    version = _feature_version()
    path = cache_dir() / "moses_metrics" / f"reference-{_key(ref.sha256, version)}.npz"
    if use_cache and path.is_file():
        return ReferenceStatistics.load(path)
    n_jobs = default_n_jobs() if n_jobs is None else n_jobs
    results = map_chunks(
        functools.partial(featurize_chunk, reparse=False), ref.read(), n_jobs=n_jobs
    )
    valid = [r for r in results if isinstance(r, MoleculeFeatures)]
    if not valid:
        raise DataError("no valid SMILES in the reference set", path=ref.label)
    ref_set = _GeneratedSet(valid, torch.device(device), n_jobs)
    mu = sigma = None
    if version["fcd"] is not None and len(valid) >= 2:
        mu, sigma = ref_set.chemnet
    stats = ReferenceStatistics(
        fingerprints=ref_set.fingerprints,
        fragments=dict(ref_set.fragments),
        scaffolds=dict(ref_set.scaffolds),
        properties={name: ref_set.properties[:, j] for j, name in enumerate(PROPERTY_NAMES)},
        fcd_mu=mu,
        fcd_sigma=sigma,
        n_invalid=len(results) - len(valid),
        meta={"source": ref.describe(), **version},
    )
    if use_cache:
        stats.save(path)
    return stats


def canonical_set(reference: ReferenceSet, *, n_jobs: int, use_cache: bool = True) -> set[str]:
    """Canonical SMILES of a training set, written as for generated molecules; cached as text."""
    key = _key(reference.sha256, {"format": _CACHE_FORMAT, "rdkit": rdkit.__version__})
    path = cache_dir() / "moses_metrics" / f"canonical-{key}.txt.gz"
    if use_cache and path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return set(fh.read().split("\n")) - {""}
    canonical = map_chunks(canonicalize_chunk, reference.read(), n_jobs=n_jobs, chunk_size=5000)
    out = {c for c in canonical if c is not None}
    if use_cache:
        text = "\n".join(sorted(out)).encode()
        _atomic_write(path, lambda fh: fh.write(gzip.compress(text, mtime=0)))
    return out


class _GeneratedSet:
    """Set-level views of featurized molecules, each computed once."""

    def __init__(
        self, features: list[MoleculeFeatures], device: torch.device, n_jobs: int = 1
    ) -> None:
        self.features = features
        self.device = device
        self.n_jobs = n_jobs
        data = b"".join(f.fingerprint for f in features)
        self.fingerprints = np.frombuffer(data, dtype=np.uint8).reshape(
            len(features), MORGAN_BITS // 8
        )
        self.fragments = Counter(x for f in features for x in f.fragments)
        self.scaffolds = Counter(f.scaffold for f in features if f.scaffold is not None)
        self.properties = np.array([f.properties for f in features], dtype=np.float64).reshape(
            -1, len(PROPERTY_NAMES)
        )

    @functools.cached_property
    def chemnet(self) -> tuple[np.ndarray, np.ndarray]:
        return chemnet_statistics(
            [f.canonical for f in self.features], device=self.device, n_jobs=self.n_jobs
        )

    def compare(
        self, ref: ReferenceStatistics, suffix: str, notes: list[str]
    ) -> list[float | None]:
        """FCD, SNN, Frag and Scaf against one reference set."""
        if not self.features:
            return [None] * 4
        fcd_value = None
        if ref.fcd_mu is None or ref.fcd_sigma is None:
            notes.append(f"FCD/{suffix}: the 'fcd' package is not installed (pip install fcd)")
        elif len(self.features) < 2:
            notes.append(f"FCD/{suffix}: needs at least two valid molecules")
        else:
            from fcd import calculate_frechet_distance

            fcd_value = float(calculate_frechet_distance(ref.fcd_mu, ref.fcd_sigma, *self.chemnet))
        snn = nearest_neighbour_similarity(self.fingerprints, ref.fingerprints, device=self.device)
        out = [fcd_value, snn]
        for name, mine, theirs in (
            ("Frag", self.fragments, ref.fragments),
            ("Scaf", self.scaffolds, ref.scaffolds),
        ):
            out.append(cosine_similarity(mine, theirs))
            if out[-1] is None:
                what = "BRICS fragments" if name == "Frag" else "scaffolds with two or more rings"
                notes.append(f"{name}/{suffix}: one of the sets has no {what}")
        return out


def _feature_version() -> dict[str, Any]:
    try:
        import fcd

        fcd_version = getattr(fcd, "__version__", "unknown")
    except ImportError:
        fcd_version = None
    return {
        "format": _CACHE_FORMAT,
        "rdkit": rdkit.__version__,
        "fcd": fcd_version,
        "morgan": [MORGAN_RADIUS, MORGAN_BITS],
        "scaffold_min_rings": SCAFFOLD_MIN_RINGS,
        "chemnet_pad_length": CHEMNET_PAD_LENGTH,
    }


def _key(content_sha256: str, version: dict[str, Any]) -> str:
    settings = hashlib.sha256(json.dumps(version, sort_keys=True).encode()).hexdigest()
    return f"{content_sha256[:16]}-{settings[:12]}"


def _settings(
    representation: str,
    unique_k: Sequence[int],
    n_jobs: int,
    device: torch.device,
    seed: int | None,
) -> dict[str, Any]:
    fcd_version = _feature_version()["fcd"]
    return {
        "definitions": "MOSES (Polykovskiy et al. 2020), molecularsets/moses metrics.py",
        "representation": representation,
        "validity": "RDKit MolFromSmiles + SanitizeMol; empty strings invalid",
        "metric_inputs": "valid molecules, duplicates kept, re-parsed from canonical SMILES",
        "unique_k": list(unique_k),
        "unique_fewer_than_k_valid": "fraction over all valid (MOSES)",
        "fingerprint": f"Morgan radius {MORGAN_RADIUS}, {MORGAN_BITS} bits; T(empty, empty) = 1",
        "intdiv": "1 - mean_i (mean_j T_ij^p)^(1/p), all ordered pairs incl. i = j; p = 1, 2",
        "scaffold_min_rings": SCAFFOLD_MIN_RINGS,
        "fcd": f"fcd {fcd_version}, ChemNet v0.13, pad {CHEMNET_PAD_LENGTH}"
        if fcd_version
        else None,
        "properties": "Crippen logP, Contrib SA score, QED, MolWt; scipy wasserstein vs test",
        "novelty_train": "canonicalized like the generated SMILES",
        "rdkit": rdkit.__version__,
        "n_jobs": n_jobs,
        "device": str(device),
        "seed": seed,
    }


class _Timer:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in self.laps.items())


def _moses(split: str) -> list[str]:
    return load_dataset("moses", split).smiles


def _read_csv(path: Path) -> list[str]:
    return read_smiles_csv(path)["smiles"].tolist()


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
