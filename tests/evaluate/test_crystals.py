"""Crystal metrics: validity, coverage, Wasserstein distances, uniqueness/novelty, S.U.N., CSP."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
from ase import Atoms
from pymatgen.core import Element, Lattice, Structure

from matgen.data import load_dataset
from matgen.evaluate.crystal.fingerprints import CompiledCrystalNNFingerprint
from matgen.evaluate.crystal.matching import uniqueness_and_novelty
from matgen.evaluate.crystal.validity import reduced_composition, smact_validity, structure_validity
from matgen.evaluate.crystals import CrystalEvalSettings, evaluate_crystals, evaluate_csp


def _cdvae_smact(elements, counts):
    """CDVAE's compositional validity written with SMACT's own neutral_ratios (SMACT 4 returns a
    list where SMACT 2 returned (bool, list)): the independent reference for ours."""
    import smact
    from smact.screening import pauling_test

    symbols = tuple(Element.from_Z(z).symbol for z in elements)
    space = smact.element_dictionary(symbols)
    data = [space[s] for s in symbols]
    electronegativities = [e.pauling_eneg for e in data]
    oxidation_states = [e.oxidation_states or [] for e in data]
    if len(set(symbols)) == 1 or all(s in smact.metals for s in symbols):
        return True
    if np.prod([len(o) for o in oxidation_states], dtype=float) > 1e7:
        return False
    for states in itertools.product(*oxidation_states):
        if smact.neutral_ratios(states, stoichs=[(c,) for c in counts], threshold=max(counts)):
            try:
                ok = pauling_test(states, electronegativities)
            except TypeError:
                ok = True
            if ok:
                return True
    return False


def test_smact_validity_equals_cdvae_algorithm_on_mp20(mp20_test):
    compositions = sorted(
        {
            reduced_composition(mp20_test.collection.arrays(i)[0])
            for i in range(0, len(mp20_test), 7)
        }
    )
    ours = [smact_validity(*c) for c in compositions]
    theirs = [_cdvae_smact(*c) for c in compositions]
    assert ours == theirs
    assert 0.7 < np.mean(ours) < 0.98  # MP-20 is mostly, not entirely, SMACT-valid
    assert smact_validity((11, 17), (1, 1)) and not smact_validity((11, 17), (1, 2))
    assert smact_validity((26, 28), (1, 3))  # an alloy of metals


def test_smact_validity_equals_cdvae_algorithm_on_random_compositions(root):
    """Random 2-4 element compositions, most of them invalid (unlike MP-20's): the vectorised
    electronegativity test agrees with SMACT's own pauling_test combination by combination."""
    rng = np.random.default_rng(7)
    pool = [1, 3, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 22, 26, 29, 30, 34, 35, 38, 50,
            52, 53, 56, 57, 78, 82, 83]  # fmt: skip
    compositions = set()
    while len(compositions) < 300:
        k = int(rng.integers(2, 5))
        zs = sorted(int(z) for z in rng.choice(pool, k, replace=False))
        compositions.add(reduced_composition([z for z in zs for _ in range(rng.integers(1, 7))]))
    compositions = sorted(compositions)
    ours = [smact_validity(*c) for c in compositions]
    assert ours == [_cdvae_smact(*c) for c in compositions]
    assert 0.1 < np.mean(ours) < 0.9


def test_structure_validity_thresholds():
    cell = Lattice.cubic(4.0)
    assert structure_validity(Structure(cell, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    assert not structure_validity(
        Structure(cell, ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]])
    )  # 0.4 Å apart
    assert not structure_validity(Structure(Lattice.cubic(0.4), ["Na"], [[0, 0, 0]]))  # 0.064 Å^3


def test_mp20_sample_scored_against_itself(mp20_test):
    structures = [mp20_test.structure(i) for i in range(0, 1000, 10)]
    report = evaluate_crystals(structures, test=structures, reference=structures[:50], workers=2)
    m = report.metrics
    assert m["struct_valid"] == 1.0
    assert m["cov_recall"] == 1.0 and m["cov_precision"] == 1.0
    assert m["amsd_recall"] == pytest.approx(0.0, abs=1e-12)
    assert m["valid"] == pytest.approx(m["comp_valid"])
    valid = report.counts["n_valid"]
    assert report.counts["n_unique"] == valid  # MP-20 ids are distinct materials
    # the first 50 are the reference: exactly the valid ones after them are novel
    valid_flags = [i for i in range(100) if i not in {s.index for s in report.invalid}]
    assert report.counts["n_novel"] == sum(1 for i in valid_flags if i >= 50)
    for key in (
        "coverage_cutoffs",
        "wdist_seed",
        "matcher",
        "novelty_reference",
        "validity_denominator",
    ):
        assert key in report.settings
    assert json.loads(report.to_json())["metrics"]["cov_recall"] == 1.0
    assert "cov_recall" in report.table()


def test_bad_samples_are_invalid_with_reasons(mp20_test):
    good = mp20_test.structure(0)
    nan_atoms = Atoms("NaCl", positions=[[0, 0, 0], [np.nan, 0, 0]], cell=np.eye(3) * 4, pbc=True)
    report = evaluate_crystals(
        [good, None, nan_atoms, Atoms(cell=np.eye(3), pbc=True)], ids=["ok", "none", "nan", "empty"]
    )
    reasons = {s.item: s.reason for s in report.invalid}
    assert set(reasons) >= {"none", "nan", "empty"}
    assert "non-finite" in reasons["nan"] and "no atoms" in reasons["empty"]
    assert report.metrics["struct_valid"] == 0.25
    assert report.counts["n_built"] == 1


def _collapsed_cell() -> Structure:
    """16 atoms at 0.9 Å^3/atom, no two closer than 0.5 Å (structurally valid by CDVAE's
    rule): the kind of cell an undertrained generator writes. CrystalNN takes seconds on it."""
    rng = np.random.default_rng(0)
    lattice = Lattice.cubic((16 * 0.9) ** (1 / 3))
    points: list[np.ndarray] = []
    while len(points) < 16:
        p = rng.uniform(0, 1, 3)
        if all(lattice.get_distance_and_image(p, q)[0] >= 0.5 for q in points):
            points.append(p)
    return Structure(lattice, ["O"] * 8 + ["Mg"] * 8, points)


def test_fingerprints_past_the_time_limit_fail_instead_of_hanging(mp20_test, tmp_path):
    import signal

    from matgen.evaluate.crystal.fingerprints import CrystalFingerprints, crystal_fingerprints

    collapsed, normal = _collapsed_cell(), mp20_test.structure(0)
    fp = crystal_fingerprints([collapsed, normal], workers=1, timeout=1.0)
    assert fp.timed_out.tolist() == [True, False] and fp.ok.tolist() == [False, True]
    assert np.isnan(fp.structure[0]).all() and np.isfinite(fp.structure[1]).all()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no timer left behind
    fp.save(tmp_path / "fp.npz")
    assert CrystalFingerprints.load(tmp_path / "fp.npz").timed_out.tolist() == [True, False]

    report = evaluate_crystals(
        [normal, collapsed],
        ids=["ok", "collapsed"],
        settings=CrystalEvalSettings(fingerprint_timeout=1.0),
        workers=1,
    )
    reasons = {s.item: s.reason for s in report.invalid}
    assert reasons["collapsed"] == "CrystalNN fingerprint took over 1 s"
    assert report.counts["n_fingerprint_timeouts"] == 1
    assert report.settings["fingerprint_timeout_s"] == 1.0


_REAL_FEATURIZE = CompiledCrystalNNFingerprint.featurize


def _stuck_on_mgo(self, structure, idx):
    if structure.composition.reduced_formula == "MgO":
        time.sleep(3600)  # stands for compiled code (qhull) that never returns to Python
    return _REAL_FEATURIZE(self, structure, idx)


def test_a_fingerprint_stuck_where_the_signal_cannot_reach_is_killed(mp20_test, monkeypatch):
    """The soft limit is a signal, which compiled code does not see until it returns: a worker
    stuck there is killed and replaced at the hard limit, and the rest of the batch completes."""
    import contextlib

    from matgen.evaluate.crystal import fingerprints as fp_module

    normal = [mp20_test.structure(i) for i in range(3)]
    assert all(s.composition.reduced_formula != "MgO" for s in normal)
    monkeypatch.setattr(fp_module, "_time_limit", lambda seconds: contextlib.nullcontext())
    monkeypatch.setattr(fp_module.CompiledCrystalNNFingerprint, "featurize", _stuck_on_mgo)
    assert fp_module.hard_limit(0.5) == 5.5
    fp = fp_module.crystal_fingerprints(
        [normal[0], _collapsed_cell(), normal[1], normal[2]], workers=2, timeout=0.5
    )
    assert fp.timed_out.tolist() == [False, True, False, False]
    assert fp.ok.tolist() == [True, False, True, True]
    assert np.isnan(fp.structure[1]).all() and np.isfinite(fp.structure[[0, 2, 3]]).all()
    assert np.isfinite(fp.composition).all()  # the lost structure still has its Magpie vector


def test_elements_without_smact_data_are_compositionally_invalid(mp20_test):
    """A generator may write an element SMACT has no data for (Ts, Z=117): invalid, no crash."""
    ts = Element("Ts").Z
    assert smact_validity((8, ts), (1, 1)) is False
    oxide = Structure(Lattice.cubic(4.0), ["Ts", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    report = evaluate_crystals([mp20_test.structure(0), oxide], ids=["ok", "ts"])
    assert report.metrics["comp_valid"] <= 0.5


def test_uniqueness_and_novelty_find_duplicates_and_supercells(mp20_test):
    a, b, c = (mp20_test.structure(i) for i in range(3))
    supercell = a.copy()
    supercell.make_supercell([2, 1, 1])
    rattled = b.copy()
    rattled.perturb(0.05)
    unique, novel = uniqueness_and_novelty([a, b, supercell, rattled, c], [c], workers=1)
    assert unique.tolist() == [True, True, False, False, True]
    assert novel.tolist() == [True, True, False, False, False]


def test_sun_rates_use_all_samples(mp20_test):
    structures = [mp20_test.structure(i) for i in range(20)]
    energies = np.linspace(-0.05, 0.2, 20)
    report = evaluate_crystals(
        structures, reference=structures[:10], e_above_hull=energies, workers=1
    )
    valid = np.ones(20, bool)
    valid[[s.index for s in report.invalid]] = False
    novel = valid & (np.arange(20) >= 10)
    assert report.metrics["sun@0"] == pytest.approx(np.mean(novel & (energies <= 0)))
    assert report.metrics["sun@0.1"] == pytest.approx(np.mean(novel & (energies <= 0.1)))
    with pytest.raises(ValueError, match="e_above_hull has 3 values for 20 samples"):
        evaluate_crystals(structures, reference=structures, e_above_hull=[0, 0, 0], workers=1)


def _displaced(structures, sigma, seed):
    rng = np.random.default_rng(seed)
    out = []
    for s in structures:
        moved = s.copy()
        for i in range(len(moved)):
            moved.translate_sites(
                [i], rng.normal(0, sigma, 3), frac_coords=False, to_unit_cell=True
            )
        out.append(moved)
    return out


def test_csp_against_itself_and_against_displaced_copies(mp20_test):
    truths = [mp20_test.structure(i) for i in range(0, 2000, 20)]
    everyone = evaluate_csp([[t] for t in truths], truths, gate="none", workers=2)
    assert everyone.metrics["match_rate"] == 1.0 and everyone.metrics["rmse"] == pytest.approx(
        0.0, abs=1e-6
    )
    gated = evaluate_csp([[t] for t in truths], truths, workers=2)  # DiffCSP: both must be valid
    assert gated.settings["validity_gate"] == "both"
    assert gated.metrics["match_rate"] == gated.counts["n_truths_valid"] / len(truths)
    rates, errors = [], []
    for sigma in (0.05, 0.2, 0.4, 0.8):
        report = evaluate_csp(
            [[p] for p in _displaced(truths, sigma, 0)], truths, gate="none", workers=2
        )
        rates.append(report.metrics["match_rate"])
        errors.append(report.metrics["rmse"])
    assert all(x >= y for x, y in itertools.pairwise(rates)) and rates[0] > rates[-1], rates
    assert errors[0] < errors[1], errors


def test_best_of_k_takes_any_matching_candidate(mp20_test):
    truths = [mp20_test.structure(i) for i in range(10)]
    far = _displaced(truths, 1.5, 1)
    one = evaluate_csp([[f] for f in far], truths, gate="none", workers=1)
    best_of_two = evaluate_csp(
        [[f, t] for f, t in zip(far, truths, strict=True)], truths, gate="none", workers=1
    )
    assert best_of_two.metrics["match_rate"] == 1.0 > one.metrics["match_rate"]
    assert best_of_two.settings["k"] == 2 and best_of_two.settings["validity_gate"] == "none"


@pytest.mark.slow
def test_mp20_test_split_scored_as_generated(root):
    """Acceptance: the MP-20 test split as samples, train + val as the novelty reference."""
    test = load_dataset("mp_20", "test", progress=False)
    structures = test.structures()
    report = evaluate_crystals(
        structures, test="mp_20", reference="mp_20", settings=CrystalEvalSettings(dataset="mp_20")
    )
    print(report.table())
    assert report.metrics["struct_valid"] == 1.0
    assert report.metrics["cov_recall"] >= 0.999 and report.metrics["cov_precision"] >= 0.999
    assert 0.8 < report.metrics["comp_valid"] < 0.95
    csp = evaluate_csp([[s] for s in structures], structures, gate="none")
    assert csp.metrics["match_rate"] == 1.0 and csp.metrics["rmse"] == pytest.approx(0.0, abs=1e-6)
