"""The screening pipeline: read → id → validity → dedup → relax → hull → novelty → S.U.N. → store.

:func:`screen` runs it. Every candidate gets one row in the store (:mod:`matgen.screen.store`)
keyed by its stable id; rows of candidates that are not relaxed (unreadable, invalid, duplicate)
are written first, and each relaxation's row is written the moment it finishes, so a killed run
loses nothing finished and a rerun relaxes only the ids without a row.

Flags, as MatterGen defines S.U.N.:

- ``valid``: the evaluation suite's structural and compositional validity of the input;
- ``unique``: first of its ``StructureMatcher`` group among the valid inputs (in input order);
- ``novel``: the *relaxed* structure matches no reference crystal (a failed relaxation's input
  structure is used instead);
- ``stable``: the relaxation converged and ``e_above_hull <= stability_threshold`` eV/atom
  (with ``max_steps = 0`` no relaxation runs: rows get status ``single_point`` and the flag
  uses the energy at the input geometry);
- ``sun``: valid, unique, novel and stable.

``novel``, ``stable`` and ``sun`` are left out of a row when unknown (no reference set, no hull).

The hull stage is a callable ``hull(structures, energies) -> [dict]``: for each relaxed
structure and its total energy (eV) it returns at least ``e_above_hull`` (eV/atom); other scalar
entries are stored as key-value pairs (as ``hull_KEY`` where ``KEY`` is ASE's or the row's
already, e.g. ``formula``), the rest under the row's data. By default it comes from
:func:`matgen.screen.hull.hull_stage` on the built-in MP reference (:func:`make_hull_stage`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matgen.data.errors import DataError
from matgen.evaluate.crystal.matching import UN_MATCHER, MatcherSettings
from matgen.screen.executors import Executor, LocalExecutor, RelaxJob, RelaxSettings
from matgen.screen.identity import structure_id, unreadable_id
from matgen.screen.inputs import Candidate, read_candidates
from matgen.screen.prefilter import Verdict, prefilter
from matgen.screen.store import ScreeningStore

if TYPE_CHECKING:
    import torch
    from pymatgen.core import Structure

    from matgen.relax.fire import RelaxResult
    from matgen.screen.novelty import ReferenceSet

__all__ = ["HullStage", "ScreenReport", "ScreenSettings", "make_hull_stage", "screen"]

HullStage = Callable[[Sequence["Structure"], Sequence[float]], list[dict[str, Any]]]


@dataclass(frozen=True)
class ScreenSettings:
    """Settings that change a screening result.

    Attributes:
        relax: relaxation settings (fmax, steps, cell, memory budget, device, dtype).
        distance_cutoff: minimum interatomic distance of a valid input, Å.
        matcher: ``StructureMatcher`` tolerances for uniqueness and novelty.
        stability_threshold: largest energy above hull of a stable candidate, eV/atom (rows
            also carry ``sun_0meV`` and ``sun_100meV``, S.U.N. at 0.0 and 0.1 eV/atom).
        corrections: energy corrections of the hull stage, ``"none"`` or ``"mp2020"``
            (:mod:`matgen.screen.hull` says when each applies).
        elemental: the candidates' elemental energies on the MP hull: ``"relaxed"``,
            ``"reference"`` or ``"auto"`` (see :func:`matgen.screen.hull.hull_stage`).
    """

    relax: RelaxSettings = field(default_factory=RelaxSettings)
    distance_cutoff: float = 0.5
    matcher: MatcherSettings = UN_MATCHER
    stability_threshold: float = 0.1
    corrections: str = "none"
    elemental: str = "auto"


@dataclass
class ScreenReport:
    """What a run did (``relaxed``, ``skipped`` as already in the store, ``repeated`` inputs
    with an id seen earlier in the same inputs) and the store's counts afterwards."""

    store: str
    inputs: int
    relaxed: int
    skipped: int
    repeated: int
    seconds: float
    counts: dict[str, int]
    stability_threshold: float
    reference: str

    def rows(self) -> list[tuple[str, object]]:
        """``(what, how many)`` lines of the summary table."""
        rate = self.relaxed / self.seconds if self.seconds > 0 else float("nan")
        lines: list[tuple[str, object]] = [
            ("input items", self.inputs),
            ("repeated ids in the inputs", self.repeated),
            ("already in the store (skipped)", self.skipped),
            ("relaxed in this run", self.relaxed),
            ("relaxed per second (whole run)", f"{rate:.2f}"),
        ]
        order = ("unreadable", "invalid", "duplicate", "converged", "max_steps", "failed")
        if self.counts.get("single_point"):
            order = (*order, "single_point")
        lines += [(f"rows {status}", self.counts.get(status, 0)) for status in order]
        lines += [
            (f"novel vs {self.reference}", self.counts.get("novel", "-")),
            (
                f"stable (settled, e_above_hull <= {self.stability_threshold} eV/atom)",
                self.counts.get("stable", "-"),
            ),
            ("e_above_hull <= 0 (any status)", self.counts.get("on_hull", "-")),
            ("S.U.N.", self.counts.get("sun", "-")),
            ("S.U.N. at 0.0 eV/atom", self.counts.get("sun_0meV", "-")),
            ("S.U.N. at 0.1 eV/atom", self.counts.get("sun_100meV", "-")),
            ("rows in the store", self.counts.get("rows", 0)),
        ]
        return lines


def make_hull_stage(
    spec: HullStage | str | Path | None,
    model: torch.nn.Module,
    settings: ScreenSettings,
) -> HullStage | None:
    """The hull stage for ``spec``: a callable as is, None for none, else
    :func:`matgen.screen.hull.hull_stage` with ``reference=spec`` (``"mp"``, ``"mlff"`` or a
    ``ComputedEntry`` JSON path), the relaxation's device and dtype, and the settings'
    corrections."""
    if spec is None or callable(spec):
        return spec
    from matgen.screen.hull import hull_stage

    if str(spec) not in ("mp", "mlff") and not Path(spec).is_file():
        raise DataError("hull reference is not 'mp', 'mlff' or an entries JSON file", path=spec)
    return hull_stage(
        model,
        device=settings.relax.device,
        dtype=settings.relax.dtype,
        reference=spec if str(spec) in ("mp", "mlff") else Path(spec),
        corrections=settings.corrections,
        fmax=settings.relax.fmax,
        max_steps=settings.relax.max_steps,
        elemental=settings.elemental,
    )


def screen(
    inputs: Sequence[str | Path],
    store: ScreeningStore | str | Path,
    *,
    potential: str | None,
    settings: ScreenSettings | None = None,
    executor: str | Executor = "local",
    hull: HullStage | str | Path | None = "mp",
    reference: ReferenceSet | None = None,
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> ScreenReport:
    """Screen every crystal in ``inputs`` into ``store``; see the module docstring.

    Args:
        inputs: CIF files, folders or zips of CIFs, extxyz files, ASE databases, CDVAE CSVs.
        store: a :class:`ScreeningStore`, a database file or a PostgreSQL URL.
        potential: shipped model name or checkpoint path (needed when anything is relaxed).
        settings: see :class:`ScreenSettings`.
        executor: ``"local"``, or an :class:`~matgen.screen.executors.Executor` (e.g. Ray's).
        hull: a hull stage, a reference for :func:`make_hull_stage` (``"mp"``, ``"mlff"``,
            an entries JSON), or None for none.
        reference: known crystals for novelty (:func:`matgen.screen.novelty.load_reference`);
            None leaves novelty and S.U.N. unknown.
        model: the loaded potential, if already at hand (otherwise loaded from ``potential``).
        progress: show a progress bar (rate and ETA) on stderr.
    """
    start = time.perf_counter()
    settings = settings or ScreenSettings()
    store = store if isinstance(store, ScreeningStore) else ScreeningStore(store)
    candidates, unreadable = read_candidates(inputs)
    finished = store.finished_ids()
    skipped = 0
    for bad in unreadable:
        key = unreadable_id(bad.source)
        if key in finished:
            skipped += 1
            continue
        finished.add(key)
        store.write(
            key,
            _empty_atoms(),
            {"source": bad.source, "status": "unreadable", "reason": bad.reason, "valid": False},
        )
    distinct, repeated = _distinct(candidates)
    ids = list(distinct)
    structures = [c.structure for c in distinct.values()]
    verdicts = prefilter(
        structures, ids, distance_cutoff=settings.distance_cutoff, matcher=settings.matcher
    )
    jobs: list[RelaxJob] = []
    for key, candidate, verdict in zip(ids, distinct.values(), verdicts, strict=True):
        if key in finished:
            skipped += 1
            continue
        pairs = _describe(candidate) | {"valid": verdict.valid}
        if not verdict.valid:
            store.write(
                key, _to_atoms(candidate.structure), pairs | {"status": "invalid"} | _why(verdict)
            )
        elif not verdict.unique:
            pairs |= {"status": "duplicate", "unique": False, "duplicate_of": verdict.duplicate_of}
            store.write(key, _to_atoms(candidate.structure), pairs)
        else:
            jobs.append(RelaxJob(key, _to_atoms(candidate.structure)))
    relaxed = 0
    if jobs:
        if potential is None:
            raise DataError(f"{len(jobs)} candidates to relax: give a potential (--potential)")
        model = model if model is not None else _load(potential, settings.relax)
        sha256 = str(model.metadata.get("sha256", ""))
        _check_provenance(store, potential, sha256)
        hull = make_hull_stage(hull, model, settings)
        runner = executor if not isinstance(executor, str) else _executor(executor, model, settings)
        writer = _ResultWriter(
            store,
            jobs,
            distinct,
            settings=settings,
            provenance={"potential": str(potential), "checkpoint_sha256": sha256},
            hull=hull,
            reference=reference,
        )
        with _progress_bar(len(jobs), progress) as bar:

            def on_result(k: int, result: RelaxResult) -> None:
                writer(k, result)
                bar.update(1)

            runner.run(jobs, on_result)
        relaxed = len(jobs)
    return ScreenReport(
        store=store.name,
        inputs=len(candidates) + len(unreadable),
        relaxed=relaxed,
        skipped=skipped,
        repeated=repeated,
        seconds=time.perf_counter() - start,
        counts=store_counts(store),
        stability_threshold=settings.stability_threshold,
        reference=reference.name if reference is not None else "no reference set",
    )


def store_counts(store: ScreeningStore) -> dict[str, int]:
    """Rows by status, and how many are novel, stable, on the hull and S.U.N. (flags that no
    row carries are left out)."""
    records = store.records().values()
    counts: Counter[str] = Counter(r.get("status", "?") for r in records)
    counts["rows"] = len(records)
    for flag in ("novel", "stable", "sun", "sun_0meV", "sun_100meV"):
        known = [r[flag] for r in records if flag in r]
        if known:
            counts[flag] = int(sum(bool(v) for v in known))
    hull = [r["e_above_hull"] for r in records if "e_above_hull" in r]
    if hull:
        counts["on_hull"] = int(sum(e <= 0.0 for e in hull))
    return dict(counts)


class _ResultWriter:
    """Turns one finished relaxation into its row: novelty, hull, flags, provenance."""

    def __init__(
        self,
        store: ScreeningStore,
        jobs: Sequence[RelaxJob],
        candidates: dict[str, Candidate],
        *,
        settings: ScreenSettings,
        provenance: dict[str, str],
        hull: HullStage | None,
        reference: ReferenceSet | None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.candidates = candidates
        self.settings = settings
        self.hull = hull
        self.reference = reference
        self.constant = provenance | {
            "relax_fmax": settings.relax.fmax,
            "relax_max_steps": settings.relax.max_steps,
        }
        if reference is not None:
            self.constant["reference"] = reference.name

    def __call__(self, k: int, result: RelaxResult) -> None:
        job = self.jobs[k]
        candidate = self.candidates[job.candidate_id]
        n = len(result.atoms)
        pairs: dict[str, Any] = _describe(candidate) | self.constant
        single_point = self.settings.relax.max_steps == 0 and result.status == "max_steps"
        settled = result.converged or single_point
        pairs |= {
            "status": "single_point" if single_point else result.status,
            "valid": True,
            "unique": True,
            "converged": result.converged,
            "steps": int(result.steps),
            "max_force": float(result.fmax),
            "energy_per_atom": float(result.energy) / n,
        }
        if result.message:
            pairs["reason"] = result.message
        data: dict[str, Any] = {
            "initial_positions": job.atoms.positions,
            "initial_cell": np.asarray(job.atoms.cell),
        }
        relaxed = _relaxed_structure(result) if result.status != "failed" else None
        if self.reference is not None:
            pairs["novel"] = self._novel(relaxed or candidate.structure)
        if self.hull is not None:
            if relaxed is not None and np.isfinite(result.energy):
                self._add_hull(relaxed, float(result.energy), pairs, data)
            above = pairs.get("e_above_hull", float("nan"))
            pairs["stable"] = bool(settled and above <= self.settings.stability_threshold)
            if "novel" in pairs:
                pairs["sun"] = pairs["stable"] and pairs["novel"]
                for name, threshold in (("sun_0meV", 0.0), ("sun_100meV", 0.1)):
                    pairs[name] = bool(settled and above <= threshold and pairs["novel"])
        self.store.write(job.candidate_id, result.atoms, pairs, energy=result.energy, data=data)

    def _novel(self, structure: Structure) -> bool:
        assert self.reference is not None
        try:
            return self.reference.is_novel(structure)
        except Exception:  # StructureMatcher fails on degenerate cells: it matches nothing known
            return True

    def _add_hull(
        self, structure: Structure, energy: float, pairs: dict[str, Any], data: dict[str, Any]
    ) -> None:
        assert self.hull is not None
        try:
            (entry,) = self.hull([structure], [energy])
        except Exception as exc:  # one candidate the hull cannot place must not stop the run
            pairs["hull_error"] = f"{type(exc).__name__}: {exc}"
            return
        from ase.db.core import reserved_keys

        for key, value in entry.items():
            if key in reserved_keys or (key in pairs and key != "e_above_hull"):
                key = f"hull_{key}"  # e.g. formula (ASE's), reason (the relaxation's)
            if isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating)):
                pairs[key] = value.item() if isinstance(value, np.generic) else value
            else:
                data[key] = value


def _distinct(candidates: Sequence[Candidate]) -> tuple[dict[str, Candidate], int]:
    """Candidates by stable id, first occurrence kept, and how many repeated an earlier id."""
    out: dict[str, Candidate] = {}
    for candidate in candidates:
        out.setdefault(structure_id(candidate.structure), candidate)
    return out, len(candidates) - len(out)


def _describe(candidate: Candidate) -> dict[str, Any]:
    return {
        "source": candidate.source,
        "reduced_formula": candidate.structure.composition.reduced_formula,
        "n_atoms": len(candidate.structure),
    }


def _why(verdict: Verdict) -> dict[str, str]:
    return {"reason": verdict.reason} if verdict.reason else {}


def _to_atoms(structure: Structure):
    from matgen.data.convert import arrays_to_atoms, structure_to_arrays

    return arrays_to_atoms(*structure_to_arrays(structure))


def _empty_atoms():
    from ase import Atoms

    return Atoms()


def _relaxed_structure(result: RelaxResult) -> Structure | None:
    from matgen.data.convert import arrays_to_structure, atoms_to_arrays

    try:
        return arrays_to_structure(*atoms_to_arrays(result.atoms, item="relaxed"))
    except DataError:
        return None


def _load(potential: str, settings: RelaxSettings) -> torch.nn.Module:
    from matgen.mlff.checkpoint import load_model

    return load_model(potential, device=settings.device, dtype=settings.torch_dtype)


def _check_provenance(store: ScreeningStore, potential: str, sha256: str) -> None:
    others = {(name, sha) for name, sha in store.potentials() if sha != sha256}
    if others:
        name, sha = sorted(others)[0]
        raise DataError(
            f"the store holds results of another potential ({name}, sha256 {sha[:12]}…), not "
            f"of {potential} (sha256 {sha256[:12]}…); screen into a new database",
            path=store.name,
        )


def _executor(name: str, model: torch.nn.Module, settings: ScreenSettings) -> Executor:
    if name == "local":
        return LocalExecutor(model, settings.relax)
    raise ValueError(f"unknown executor {name!r}: pass 'local' or an Executor (RayExecutor)")


def _progress_bar(total: int, enabled: bool):
    """tqdm on stderr (count, rate, ETA), or a silent one."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc="relaxing",
        unit="crystal",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )
