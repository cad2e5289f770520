"""CrystalNN structure fingerprints and Magpie composition fingerprints (matminer), as in CDVAE.

Structure fingerprint: the mean over sites of matminer's ``CrystalNNFingerprint`` with the
``ops`` preset (61 numbers), computed by :class:`CompiledCrystalNNFingerprint`: matminer's own
CrystalNN analysis with compiled order parameters and Voronoi helpers, equal to matminer's values
(bit for bit except the Steinhardt ``q_l``, which agree to rounding) and 3.6x faster on the
benchmark (``benchmarks/bench_evaluate_crystals.py``). Composition fingerprint:
``ElementProperty`` with the ``magpie`` preset (132 numbers), normalised for distances with the fixed means and standard deviations that
CDVAE and DiffCSP use (``magpie_scaler.json``; NaN after scaling becomes 0). A structure whose
fingerprint cannot be computed gets NaN rows and ``ok = False`` (CDVAE then counts it invalid); so
does one whose CrystalNN analysis runs past a time limit (60 s by default: collapsed cells with
dozens of atoms within a few Å can take hours), marked in ``timed_out``.
Fingerprints of registered reference splits are cached (``.npz``, no pickle) under
``$MATGEN_CACHE``, keyed by the split file's sha256.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from matgen.data.parallel import process_map

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["CrystalFingerprints", "crystal_fingerprints", "scale_composition_fingerprints"]

N_STRUCTURE_FEATURES = 61
N_COMPOSITION_FEATURES = 132
_SCALER = Path(__file__).with_name("magpie_scaler.json")
_VERSION = 2  # 2: order parameters from the compiled kernel


@dataclass
class CrystalFingerprints:
    """Fingerprints of ``n`` crystals: ``structure`` (n, 61), ``composition`` (n, 132) unscaled,
    ``ok`` (n,) False where the structure fingerprint failed (rows are NaN there), ``timed_out``
    (n,) True where it failed by running past the time limit."""

    structure: np.ndarray
    composition: np.ndarray
    ok: np.ndarray
    timed_out: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if len(self.timed_out) != len(self.ok):
            self.timed_out = np.zeros(len(self.ok), dtype=bool)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{np.random.default_rng().integers(1 << 62)}")
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                structure=self.structure,
                composition=self.composition,
                ok=self.ok,
                timed_out=self.timed_out,
            )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> CrystalFingerprints:
        with np.load(path, allow_pickle=False) as z:
            timed_out = z["timed_out"] if "timed_out" in z.files else np.zeros(0, dtype=bool)
            return cls(z["structure"], z["composition"], z["ok"], timed_out)


class _TimeLimit(BaseException):
    """Raised by the timer; a BaseException so that matminer's and pymatgen's ``except
    Exception`` blocks cannot swallow it."""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_TimeLimit` in this block after ``seconds`` of wall time. A no-op without
    a limit, off the main thread, or where the platform has no ``SIGALRM`` (worker processes run
    their jobs on their main thread, so the limit holds there)."""
    usable = (
        seconds is not None
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class CompiledCrystalNNFingerprint:
    """matminer's ``CrystalNNFingerprint`` with its order parameters evaluated by the compiled
    kernel of :mod:`matgen.evaluate.crystal._order_params` instead of pymatgen's Python loops.

    The coordination analysis (CrystalNN's neighbour shells and their weights) is matminer's
    own object, run with pymatgen's two Voronoi geometry helpers swapped for bit-identical
    compiled ones (:mod:`matgen.evaluate.crystal._voronoi_terms`); the order-parameter table
    (types and parameters per coordination number) is read from it too, so both follow the
    installed matminer. ``featurize(structure, i)`` returns matminer's list: bit for bit except
    the Steinhardt ``q_l``, which agree to rounding (at most ~1e-8, where q_l is near 0; see
    ``tests/evaluate/test_order_params.py``).
    """

    def __init__(self, reference) -> None:
        from matgen.evaluate.crystal._order_params import KINDS, N_PARAMS, pack_parameters

        if getattr(reference, "chem_info", None) is not None:
            raise ValueError("chemical-difference features are not supported")
        self.cnn = reference.cnn
        self.max_cn = max(reference.op_types)
        self.shells: list[tuple[int, np.ndarray, np.ndarray]] = []
        for cn in range(1, self.max_cn + 1):
            table = list(reference.ops.get(cn, ()))
            if not table or table[0] != "wt" or "wt" in table[1:]:
                raise ValueError(f"coordination number {cn}: expected 'wt' first and only there")
            kinds, rows = [], []
            for op in table[1:]:
                if len(op._types) != 1:
                    raise ValueError("one order parameter per LocalStructOrderParams expected")
                rows.append(pack_parameters(op._types[0], op._params[0]))
                kinds.append(KINDS[op._types[0]])
            self.shells.append(
                (
                    len(kinds),
                    np.asarray(kinds, dtype=np.int64),
                    np.asarray(rows, dtype=np.float64).reshape(len(kinds), N_PARAMS),
                )
            )

    def featurize(self, structure: Structure, idx: int) -> list[float]:
        from matgen.evaluate.crystal._order_params import order_parameters
        from matgen.evaluate.crystal._voronoi_terms import compiled_voronoi_helpers

        with compiled_voronoi_helpers():
            nndata = self.cnn.get_nn_data(structure, idx)
        centre = structure[idx].coords
        out: list[float] = []
        for cn, (n_ops, kinds, params) in enumerate(self.shells, start=1):
            weight = nndata.cn_weights.get(cn, 0)
            out.append(weight)
            if n_ops == 0:
                continue
            if weight == 0:
                out.extend([weight] * n_ops)
                continue
            vectors = np.asarray(
                [d["site"].coords - centre for d in nndata.cn_nninfo[cn]], dtype=np.float64
            ).reshape(-1, 3)
            values = order_parameters(vectors, kinds, params)
            out.extend(weight * (0 if np.isnan(v) else float(v)) for v in values)
        return out


@cache
def _featurizers():
    from matminer.featurizers.composition.composite import ElementProperty
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    site = CompiledCrystalNNFingerprint(CrystalNNFingerprint.from_preset("ops"))
    return site, ElementProperty.from_preset("magpie")


def _site_representatives(
    structure: Structure, symprec: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sites to fingerprint and their weights: all sites (exact), or one per symmetry orbit
    weighted by its multiplicity when ``symprec`` is given."""
    everyone = (np.arange(len(structure)), np.ones(len(structure)))
    if symprec is None:
        return everyone
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        dataset = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_dataset()
    except Exception:  # spglib fails on some degenerate cells: fall back to every site
        return everyone
    if dataset is None:
        return everyone
    representatives, weights = np.unique(dataset.equivalent_atoms, return_counts=True)
    return representatives, weights.astype(np.float64)


def _fingerprint_one(
    job: tuple[Structure, float | None, float | None],
) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """(structure fingerprint, composition fingerprint, ok, timed out) of one structure."""
    structure, symprec, timeout = job
    site_fp, comp_fp = _featurizers()
    failed = np.full(N_STRUCTURE_FEATURES, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        composition = np.asarray(comp_fp.featurize(structure.composition), dtype=np.float64)
        start = time.monotonic()
        try:
            with _time_limit(timeout):
                sites, weights = _site_representatives(structure, symprec)
                rows = np.asarray(
                    [site_fp.featurize(structure, int(i)) for i in sites], dtype=np.float64
                )
            if timeout is not None and time.monotonic() - start > timeout:
                # the timer's exception can be lost (raised inside a finaliser, which Python
                # only reports): past the limit is past the limit, whatever the timer did
                return failed, composition, False, True
            return weights @ rows / weights.sum(), composition, True, False
        except _TimeLimit:
            return failed, composition, False, True
        except Exception:  # matminer/pymatgen raise many types on pathological structures
            return failed, composition, False, False


def _fingerprint_lost(
    job: tuple[Structure, float | None, float | None], error: BaseException
) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """The result of a structure whose worker was stopped past the hard limit (or died)."""
    structure = job[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        composition = np.asarray(_featurizers()[1].featurize(structure.composition), dtype=float)
    timed_out = isinstance(error, concurrent.futures.TimeoutError)
    return np.full(N_STRUCTURE_FEATURES, np.nan), composition, False, timed_out


def hard_limit(timeout: float | None) -> float | None:
    """Seconds after which a fingerprint worker is killed: the soft limit (a signal, which
    compiled code such as qhull cannot see until it returns) plus a grace period."""
    return None if timeout is None else timeout + max(5.0, timeout / 2)


def crystal_fingerprints(
    structures: list[Structure],
    *,
    symprec: float | None = None,
    workers: int | None = None,
    progress: bool = False,
    cache_path: Path | None = None,
    timeout: float | None = 60.0,
) -> CrystalFingerprints:
    """Fingerprints of ``structures``, computed in parallel processes; read from and written to
    ``cache_path`` when given.

    ``timeout`` (s, None: no limit) bounds the CrystalNN analysis of one structure; a structure
    past it counts as a failed fingerprint (``ok`` False, ``timed_out`` True). MP-20 crystals
    take well under a second each. The limit is first a signal in the worker; a worker stuck in
    compiled code (qhull, or NumPy on a collapsed cell with thousands of neighbours) does not see
    it, and is killed and replaced at :func:`hard_limit` (``timeout`` plus a grace period). With a
    limit, the work always runs in worker processes, ``workers=1`` included.

    ``symprec`` (Å) None computes every site, exactly as CDVAE. A value fingerprints one site per
    symmetry orbit found by spglib at that tolerance, weighted by multiplicity: about 2x faster on
    MP-20, equal up to numerical noise in CrystalNN (differences up to ~1e-2 seen on MP-20, against
    coverage cutoffs of 0.2-0.4).
    """
    if cache_path is not None and cache_path.is_file():
        cached = CrystalFingerprints.load(cache_path)
        if len(cached.ok) == len(structures):
            return cached
    rows = process_map(
        _fingerprint_one,
        [(s, symprec, timeout) for s in structures],
        workers=workers,
        progress=progress,
        desc="fingerprints",
        unit="crystal",
        timeout=hard_limit(timeout),
        fallback=_fingerprint_lost,
        initializer=_featurizers,  # loaded before the clock starts
    )
    result = CrystalFingerprints(
        structure=np.stack([r[0] for r in rows]) if rows else np.zeros((0, N_STRUCTURE_FEATURES)),
        composition=np.stack([r[1] for r in rows])
        if rows
        else np.zeros((0, N_COMPOSITION_FEATURES)),
        ok=np.array([r[2] for r in rows], dtype=bool),
        timed_out=np.array([r[3] for r in rows], dtype=bool),
    )
    if cache_path is not None:
        result.save(cache_path)
    return result


def reference_cache_path(sha256: str, split: str, *, symprec: float | None = None) -> Path:
    """Cache file for the fingerprints of a registered split."""
    from matgen.data.root import cache_dir

    sites = "all" if symprec is None else f"sym{symprec:g}"
    return cache_dir() / f"crystal_fp-v{_VERSION}-{split}-{sites}-{sha256[:32]}.npz"


@cache
def _scaler() -> tuple[np.ndarray, np.ndarray]:
    data = json.loads(_SCALER.read_text())
    return np.asarray(data["means"], dtype=np.float64), np.asarray(data["stds"], dtype=np.float64)


def scale_composition_fingerprints(composition: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` with CDVAE's constants; NaN (missing Magpie data) becomes 0."""
    means, stds = _scaler()
    scaled = (np.asarray(composition, dtype=np.float64) - means) / stds
    return np.where(np.isnan(scaled), 0.0, scaled)
