"""The screening pipeline in process: ids, pre-filter, rows as results finish, resume, hull stage,
novelty, exports."""

from __future__ import annotations

import zipfile

import ase.io
import numpy as np
import pandas as pd
import pytest

from matgen.data import load_dataset
from matgen.data.errors import DataError
from matgen.screen.executors import LocalExecutor, RelaxSettings
from matgen.screen.export import export_store
from matgen.screen.identity import structure_id
from matgen.screen.novelty import ReferenceSet
from matgen.screen.pipeline import ScreenSettings, screen
from matgen.screen.store import ScreeningStore, key_string

SETTINGS = ScreenSettings(relax=RelaxSettings(fmax=0.05, max_steps=25))


@pytest.fixture(scope="module")
def mp20(root):
    return load_dataset("mp_20", "test", progress=False)


def test_structure_id_is_deterministic_and_setting_invariant(mp20):
    structure = mp20.structure(0)
    key = structure_id(structure)
    assert key == structure_id(structure.copy()) and key.startswith("GaTe-")
    shifted = structure.copy()
    shifted.translate_sites(list(range(len(shifted))), [0.13, 0.27, 0.5])
    supercell = structure.copy()
    supercell.make_supercell([2, 1, 1])
    assert structure_id(shifted) == key and structure_id(supercell) == key
    ids = [structure_id(mp20.structure(i)) for i in range(30)]
    assert len(set(ids)) == 30


def test_key_strings_never_read_as_numbers():
    assert key_string("mp-1234") == "mp-1234"
    assert key_string("42") == "#42" and key_string("1e5") == "#1e5"
    assert key_string("True") == "#True"


@pytest.fixture(scope="module")
def inputs(mp20, tmp_path_factory):
    """Six rattled MP-20 crystals, a near copy of the first (a duplicate), a repeat of the second
    (same id), a crystal with fused atoms (invalid), a malformed CIF and a missing file."""
    folder = tmp_path_factory.mktemp("inputs")
    frames = []
    for i in range(6):
        atoms = mp20.atoms(i)
        atoms.calc, atoms.info = None, {}
        atoms.rattle(0.05, seed=i)
        frames.append(atoms)
    near = frames[0].copy()
    near.positions[0] += [0.02, 0.0, 0.0]
    fused = frames[3].copy()
    fused.positions[1] = fused.positions[0] + [0.3, 0.0, 0.0]
    ase.io.write(folder / "candidates.extxyz", [*frames, near, frames[1], fused], format="extxyz")
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 3\n")
    return [folder / "candidates.extxyz", folder / "broken.cif", folder / "missing.cif"]


class CountingExecutor(LocalExecutor):
    """The local executor, checking that each result's row exists when the next result comes."""

    def run(self, jobs, on_result):
        seen = []

        def check(k, result):
            on_result(k, result)
            seen.append(k)
            assert len(self.store) == self.rows_before + len(seen)

        super().run(jobs, check)


def test_screen_writes_one_row_per_candidate_as_results_finish(
    inputs, mp20, tiny_potential, fake_hull, tmp_path
):
    from matgen.mlff.checkpoint import load_model

    model = load_model(tiny_potential)
    store = ScreeningStore(tmp_path / "results.db")
    executor = CountingExecutor(model, SETTINGS.relax)
    executor.store, executor.rows_before = store, 4  # unreadable x2, invalid, duplicate
    reference = ReferenceSet.from_structures("mp20-first", [mp20.structure(2)])
    kwargs = dict(
        potential=str(tiny_potential),
        settings=SETTINGS,
        hull=fake_hull,
        reference=reference,
        model=model,
        progress=False,
    )
    report = screen(inputs, store, executor=executor, **kwargs)
    records = store.records()
    assert len(records) == 10 and report.repeated == 1 and report.relaxed == 6
    reasons = sorted(r["reason"] for r in records.values() if r["status"] == "unreadable")
    assert "no such file or folder" in reasons[1] and "CIF" in reasons[0], reasons
    (invalid,) = [r for r in records.values() if r["status"] == "invalid"]
    assert invalid["valid"] is False and "closer than 0.5" in invalid["reason"]
    (duplicate,) = [r for r in records.values() if r["status"] == "duplicate"]
    assert duplicate["duplicate_of"].startswith("GaTe-") and duplicate["unique"] is False
    relaxed = [r for r in records.values() if r["status"] in ("converged", "max_steps")]
    assert len(relaxed) == 6
    sha = load_model(tiny_potential).metadata["sha256"]
    for r in relaxed:
        assert r["valid"] and r["unique"] and r["checkpoint_sha256"] == sha
        assert r["potential"] == str(tiny_potential) and r["steps"] <= 25
        assert np.isclose(r["energy_per_atom"] * r["n_atoms"], r["energy"])
        assert r["stable"] == (r["converged"] and r["e_above_hull"] <= 0.1)
        assert r["sun"] == (r["stable"] and r["novel"])
        assert r["decomposition"] == "fake" and r["reference"] == "mp20-first"
        assert r["hull_formula"] == r["reduced_formula"]
    assert report.counts["converged"] + report.counts["max_steps"] == 6
    # the reference holds CuNi unrelaxed: relaxed with a random potential it may move away,
    # but everything else has no crystal of its composition there and is novel
    assert all(r["novel"] for r in relaxed if r["reduced_formula"] != "CuNi")
    row = next(store.db.select(status="converged"))
    assert row.data["weights"] == [0.5, 0.5] and row.data["initial_positions"].shape[1] == 3

    again = screen(inputs, store, **kwargs)
    assert again.relaxed == 0 and again.skipped == 10 and store.records() == records


def test_novelty_matches_known_crystals(mp20):
    reference = ReferenceSet.from_structures("two", [mp20.structure(0), mp20.structure(1)])
    known = mp20.structure(0)
    known.perturb(0.01)
    assert not reference.is_novel(known)
    assert reference.is_novel(mp20.structure(2))  # no reference crystal of its composition


def test_another_potential_is_refused(inputs, tiny_potential, tmp_path):
    from matgen.mlff.checkpoint import load_model

    store = ScreeningStore(tmp_path / "results.db")
    screen(
        inputs[:1],
        store,
        potential=str(tiny_potential),
        settings=SETTINGS,
        hull=None,
        progress=False,
    )
    other = load_model(tiny_potential)
    other.metadata["sha256"] = "0" * 64
    more = inputs[0].parent / "more.extxyz"
    ase.io.write(more, ase.io.read(inputs[0], index="0"))
    more_atoms = ase.io.read(more)
    more_atoms.rattle(0.1, seed=99)
    ase.io.write(more, more_atoms)
    with pytest.raises(DataError, match="another potential"):
        screen([more], store, potential="other", model=other, settings=SETTINGS, progress=False)


def test_exports(inputs, tiny_potential, tmp_path):
    store = ScreeningStore(tmp_path / "results.db")
    screen(
        inputs, store, potential=str(tiny_potential), settings=SETTINGS, hull=None, progress=False
    )
    records = store.records()
    assert export_store(store, tmp_path / "out.csv") == 10
    table = pd.read_csv(tmp_path / "out.csv")
    assert set(table["candidate_id"]) == set(records)
    assert export_store(store, tmp_path / "out.extxyz") == 8  # every row with atoms
    frames = ase.io.read(tmp_path / "out.extxyz", index=":")
    energies = {f.info["candidate_id"]: f.get_potential_energy() for f in frames if f.calc}
    assert energies and all(np.isclose(records[k]["energy"], e) for k, e in energies.items())
    assert export_store(store, tmp_path / "out.zip") == 8
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        names = archive.namelist()
        assert len(names) == 8 and all(n.endswith(".cif") for n in names)
        assert "_cell_length_a" in archive.read(names[0]).decode()
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pyarrow"):
            export_store(store, tmp_path / "out.parquet")
    else:
        assert export_store(store, tmp_path / "out.parquet") == 10
    with pytest.raises(DataError, match="unknown export format"):
        export_store(store, tmp_path / "out.json")


def test_zero_steps_screen_single_points(inputs, tiny_potential, fake_hull, tmp_path):
    """``max_steps = 0``: no relaxation; rows are single points at the input geometry, and the
    stability flags use their energies."""
    from matgen.mlff.checkpoint import load_model

    settings = ScreenSettings(relax=RelaxSettings(fmax=0.05, max_steps=0))
    store = ScreeningStore(tmp_path / "single.db")
    report = screen(
        inputs,
        store,
        potential=str(tiny_potential),
        settings=settings,
        hull=fake_hull,
        model=load_model(tiny_potential),
        progress=False,
    )
    # a crystal already below fmax counts as converged, the others as single points
    points = [r for r in store.records().values() if r["status"] in ("single_point", "converged")]
    assert len(points) == 6 and report.counts["single_point"] >= 1
    assert all(r["steps"] == 0 for r in points)
    assert all(r["stable"] == (r["e_above_hull"] <= 0.1) for r in points)
    for row in store.db.select(status="single_point"):
        assert np.allclose(row.positions, row.data["initial_positions"])
