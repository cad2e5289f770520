"""Energy above hull: the math on toy hulls, the three references, corrections, the pipeline
stage, and the acceptance check on known MP structures (mp_sample_lemat) against MP's labels."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure

from matgen.screen.hull import (
    ReferenceHull,
    energy_correction,
    formation_energy_per_atom,
    hull_stage,
)
from matgen.screen.hull_labels import (
    label_agreement,
    mp_sample_with_formation_energies,
    print_label_agreement,
)
from matgen.screen.mlff_hull import MLFFHull
from matgen.screen.reference import MP_LABEL_SOURCE, load_mp_reference

MU = {"Li": -1.9, "O": -4.9}  # an arbitrary elemental scale, eV/atom


def total(formula: str, e_form: float, mu: dict[str, float]) -> float:
    """Energy per atom with formation energy ``e_form`` in the scale ``mu``."""
    return e_form - formation_energy_per_atom(formula, 0.0, mu)


def toy_hull(**kwargs) -> ReferenceHull:
    """Li-O with Li2O at ΔE_f = -2.0 and Li2O2 at -1.6 eV/atom (on the hull), LiO3 at -0.5
    (above it), in the scale ``MU``."""
    phases = {"Li2O": -2.0, "Li2O2": -1.6, "LiO3": -0.5}
    energies = [total(f, e, MU) for f, e in phases.items()]
    return ReferenceHull(list(phases), energies, ids=list(phases), elemental_energies=MU, **kwargs)


def test_formation_energy_is_energy_minus_elemental_mean():
    assert formation_energy_per_atom("Li2O", -5.0, MU) == pytest.approx(-5.0 - (2 * -1.9 - 4.9) / 3)


def test_toy_hull_distances_products_and_flags():
    hull = toy_hull()
    on, above, below, mixed = hull.e_above_hull(
        ["Li2O", "LiO3", "Li2O", "LiO"], formation_energies=[-2.0, -0.5, -2.1, -1.7]
    )
    assert on.e_above_hull == pytest.approx(0.0, abs=1e-9) and on.stable_0meV
    assert on.decomposition == (("Li2O", pytest.approx(1.0)),)
    # LiO3 (x_O = 3/4) sits on the Li2O2 (x_O = 1/2) – O tie line: E_hull = -1.6 * (1/4)/(1/2)
    assert above.e_above_hull == pytest.approx(-0.5 + 0.8)
    assert not above.stable_0meV and not above.stable_100meV and above.is_stable(0.31)
    assert {f for f, _ in above.decomposition} == {"Li2O2", "O2"}
    assert above.decomposition_ids[0] in ("Li2O2", "mu:O")
    assert below.e_above_hull == pytest.approx(-0.1) and below.stable_0meV
    # LiO = Li2O2: -1.7 lies 0.1 below it
    assert mixed.e_above_hull == pytest.approx(-0.1) and mixed.covered and mixed.complete is None
    assert sum(w for _, w in above.decomposition) == pytest.approx(1.0)


def test_elements_outside_the_reference_are_not_covered():
    (result,) = toy_hull().e_above_hull(["LiF"], formation_energies=[-3.0])
    assert not result.covered and math.isnan(result.e_above_hull) and "F" in result.reason
    row = result.as_dict()
    assert row["covered"] is False and "reason" in row and "complete" not in row


def test_potential_energies_change_scale_through_elemental_energies():
    hull = toy_hull()
    mu_pot = {"Li": -0.3, "O": -7.0}
    forms = [-2.0, -0.5, -1.2]
    formulas = ["Li2O", "LiO3", "Li3O2"]
    totals = [total(f, e, mu_pot) for f, e in zip(formulas, forms, strict=True)]
    a = hull.e_above_hull(formulas, formation_energies=forms)
    b = hull.e_above_hull(formulas, totals, elemental_energies=mu_pot)
    for x, y in zip(a, b, strict=True):
        assert y.e_above_hull == pytest.approx(x.e_above_hull, abs=1e-9)
        assert y.e_form_per_atom == pytest.approx(x.e_form_per_atom, abs=1e-9)
    (no_mu,) = hull.e_above_hull(["Li2O"], [-5.0], elemental_energies={"Li": -0.3})
    assert no_mu.covered and math.isnan(no_mu.e_above_hull) and "O" in no_mu.reason
    with pytest.raises(ValueError, match="exactly one"):
        hull.e_above_hull(["Li2O"])


def test_entries_json_gives_the_same_hull(tmp_path):
    from pymatgen.entries.computed_entries import ComputedEntry

    hull = toy_hull()
    entries = [ComputedEntry(el, mu, entry_id=f"ref-{el}") for el, mu in MU.items()]
    entries += [
        ComputedEntry(c * 2, e * c.num_atoms * 2, entry_id=i)
        for c, e, i in zip(hull.compositions, hull.energies_per_atom, hull.ids, strict=True)
    ]
    path = tmp_path / "entries.json"
    path.write_text(json.dumps([e.as_dict() for e in entries]))
    as_list = ReferenceHull.from_entries(path)
    path_dict = tmp_path / "entries_by_id.json"
    path_dict.write_text(json.dumps({e.entry_id: e.as_dict() for e in entries}))
    as_dict = ReferenceHull.from_entries(path_dict)
    assert as_list.elemental_energies == pytest.approx(MU)
    totals = [-3.9, -3.3]
    for other in (as_list, as_dict):
        for x, y in zip(
            hull.e_above_hull(["Li2O", "LiO3"], totals),
            other.e_above_hull(["Li2O", "LiO3"], totals),
            strict=True,
        ):
            assert y.e_above_hull == pytest.approx(x.e_above_hull, abs=1e-9)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"not": "an entry"}]))
    with pytest.raises(ValueError, match=r"bad\.json.*ComputedEntry"):
        ReferenceHull.from_entries(bad)


def test_mp2020_corrections_are_a_setting():
    fe2o3 = Structure(
        [[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]],
        ["Fe", "Fe", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.25, 0.25, 0.25]],
    )
    correction = energy_correction(fe2o3, -40.0)
    # MP2020: oxide anion correction (-0.687 eV per O) + GGA/GGA+U mixing (-2.256 eV per Fe)
    assert correction == pytest.approx(3 * -0.687 + 2 * -2.256, abs=0.01)
    assert energy_correction("Fe", -8.0) == 0.0
    mu = {"Fe": -8.3, "O": -4.9}
    hull = ReferenceHull(["FeO"], [-7.0], elemental_energies=mu, corrections="mp2020")
    raw = ReferenceHull(["FeO"], [-7.0], elemental_energies=mu)
    (corrected,) = hull.e_above_hull([fe2o3], [-8.0])
    (plain,) = raw.e_above_hull([fe2o3], [-8.0])
    assert corrected.correction_per_atom == pytest.approx(correction / 5)
    assert corrected.e_form_per_atom - plain.e_form_per_atom == pytest.approx(correction / 5)
    with pytest.raises(ValueError, match="corrections"):
        ReferenceHull(["FeO"], [-7.0], corrections="mp2023")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mp_hull(root):
    return ReferenceHull.from_mp(root)


def test_mp_reference_is_deduplicated_and_cached(root, mp_hull, tmp_path):
    data = mp_hull.mp_data
    assert len(set(data.ids)) == len(data.ids) > 40_000
    assert len(data.elemental_energies) == 89
    assert data.elemental_energies["O"] == pytest.approx(-4.9467, abs=1e-3)  # MP's O2 reference
    first = load_mp_reference(root, cache=tmp_path)
    (cached,) = tmp_path.glob("mp_hull_reference_*.json.gz")
    again = load_mp_reference(root, cache=tmp_path)
    assert again.ids == first.ids and again.formation_energies == first.formation_energies
    assert cached.stat().st_size < 2_000_000
    # an id in several sources keeps its lowest formation energy
    table = pd.concat(
        pd.read_csv(root / n, usecols=["material_id", "formation_energy_per_atom"])
        for n in ("mp_20/val.csv.gz", "mpts_52/val.csv.gz", "mpts_52/test.csv.gz")
    ).dropna()
    lowest = table.groupby("material_id").formation_energy_per_atom.min()
    index = dict(zip(data.ids, data.formation_energies, strict=True))
    some = lowest.index[:: max(len(lowest) // 200, 1)]
    assert all(index[i] <= lowest[i] + 1e-12 for i in some)
    elemental = data.elemental_structure_ids()
    assert len(elemental) >= 72 and elemental["Si"] == "mp-149"


def test_known_mp_structures_reproduce_mp_labels(root, mp_hull):
    """Acceptance: MP formation energies of mp_sample_lemat structures (joined by material_id)
    placed on the built-in hull reproduce MP's energy-above-hull labels."""
    if not (root / MP_LABEL_SOURCE).is_file():
        pytest.skip("MP label file missing")
    sample = mp_sample_with_formation_energies(root)
    assert len(sample) >= 650
    results = mp_hull.e_above_hull(sample.formula.tolist(), formation_energies=sample.e_form)
    pred = np.array([r.e_above_hull for r in results])
    label = sample.label.to_numpy()
    complete = np.array([bool(r.complete) for r in results])
    assert all(r.covered for r in results)
    stable = label <= 1e-6
    on_hull = pred[stable] <= 1e-6
    everywhere = label_agreement(pred, label)
    where_complete = label_agreement(pred[complete], label[complete])
    print(f"\nstable labels on the hull: {on_hull.sum()} of {stable.sum()}")
    print("all:      ", everywhere.summary())
    print("complete: ", where_complete.summary())
    print("<=0.1 eV: ", label_agreement(pred, label, threshold=0.1).summary())
    assert on_hull.mean() >= 0.95
    assert where_complete.n >= 100 and where_complete.mae <= 0.01
    assert where_complete.within_25meV >= 0.9 and where_complete.f1_stable >= 0.85
    assert everywhere.mae <= 0.015 and everywhere.f1_stable >= 0.8

    # the same numbers through a potential's scale: total energies + μ^pot
    rng = np.random.default_rng(0)
    mu = {el: float(rng.normal(-4, 2)) for el in mp_hull.elemental_energies}
    totals = [total(f, e, mu) for f, e in zip(sample.formula, sample.e_form, strict=True)]
    lines: list[str] = []
    again, agreement = print_label_agreement(
        mp_hull, sample.formula.tolist(), totals, label, elemental_energies=mu, out=lines.append
    )
    assert [r.e_above_hull for r in again] == pytest.approx(pred.tolist(), abs=1e-6)
    assert agreement[0.0].mae == pytest.approx(everywhere.mae, abs=1e-6)
    assert len(lines) == 3 and "F1" in lines[1]


def _fake_energy(structure: Structure) -> float:
    """A smooth synthetic potential: elemental scale ``MU``-like plus a formula hash."""
    comp = structure.composition
    digest = hashlib.sha256(comp.reduced_formula.encode()).digest()
    e_form = -digest[0] / 255 if len(comp.elements) > 1 else 0.0
    return total(comp.formula, e_form, {"Li": -1.9, "O": -4.9, "N": -8.3}) * len(structure)


def test_mlff_hull_uses_the_potential_on_every_reference(mp_hull):
    calls: list[int] = []

    def energy_fn(structures):
        calls.append(len(structures))
        return [_fake_energy(s) for s in structures]

    hull = MLFFHull(energy_fn, mp_hull, window=math.inf)
    (result,) = hull.e_above_hull(["Li3N"], [-3.0])
    li_n = {"Li", "N"}
    ids = [
        i
        for i, c in zip(mp_hull.ids, mp_hull.compositions, strict=True)
        if {e.symbol for e in c.elements} <= li_n
    ]
    elemental = {hull._elemental_ids["Li"], hull._elemental_ids["N"]}
    assert set(hull.potential_energies) == set(ids) | elemental
    # the same phases, energies straight from the fake potential
    structures = mp_hull.mp_data.structures(ids)
    direct = ReferenceHull(
        [structures[i].composition for i in ids],
        [_fake_energy(structures[i]) / len(structures[i]) for i in ids],
        elemental_energies={"Li": -1.9, "N": -8.3},
    )
    (expected,) = direct.e_above_hull(["Li3N"], [-3.0])
    assert result.e_above_hull == pytest.approx(expected.e_above_hull, abs=1e-9)
    before = len(calls)
    hull.e_above_hull(["Li3N", "LiN3"], [-3.1, -7.0])
    assert len(calls) == before  # nothing relaxed twice


def test_hull_stage_with_a_potential(root, tiny_potential):
    from matgen.data import load_dataset
    from matgen.mlff.checkpoint import load_model

    model = load_model(tiny_potential)
    stage = hull_stage(model, max_steps=5)
    data = load_dataset("mp_20", "test", progress=False)
    structures = [data.structure(i) for i in range(2)]
    rows = stage(structures, [-3.0 * len(s) for s in structures])
    assert len(rows) == 2
    for row, s in zip(rows, structures, strict=True):
        assert row["reduced_formula"] == s.composition.reduced_formula
        assert row["covered"] and math.isfinite(row["e_above_hull"])
        assert isinstance(row["decomposition"], str) and isinstance(row["stable_0meV"], bool)
    # the MLFF-consistent hull: the binary's MP phases relaxed with the same potential
    binary = next(
        s for s in map(data.structure, range(len(data))) if len(s.composition.elements) == 2
    )
    mlff = hull_stage(model, reference="mlff", max_steps=3)
    (row,) = mlff([binary], [-3.0 * len(binary)])
    assert row["covered"] and math.isfinite(row["e_above_hull"])
    assert row["decomposition_ids"]


@pytest.mark.slow
def test_every_labelled_reference_phase_against_mp_labels(root, mp_hull):
    """All ~40k reference phases that carry an MP label, placed with their own formation energy."""
    labels = pd.read_csv(root / MP_LABEL_SOURCE, usecols=["material_id", "e_above_hull_mp"])
    data = mp_hull.mp_data
    table = pd.DataFrame(
        {"material_id": data.ids, "formula": data.formulas, "e_form": data.formation_energies}
    )
    table = table.merge(labels, on="material_id")
    results = mp_hull.e_above_hull(table.formula.tolist(), formation_energies=table.e_form)
    pred = np.array([r.e_above_hull for r in results])
    label = table.e_above_hull_mp.to_numpy()
    complete = np.array([bool(r.complete) for r in results])
    everywhere = label_agreement(pred, label)
    where_complete = label_agreement(pred[complete], label[complete])
    stable = label <= 1e-6
    print(f"\nstable labels on the hull: {(pred[stable] <= 1e-6).sum()} of {stable.sum()}")
    print("all:      ", everywhere.summary())
    print("complete: ", where_complete.summary())
    assert everywhere.n > 35_000 and where_complete.mae <= 0.015
