"""EDM's 3D-molecule metrics: bond perception, stability, validity, uniqueness, novelty.

The acceptance test runs the whole QM9 test split (13,083 molecules, a few seconds) and compares
with the "Data" row of EDM's Table 1 (Hoogeboom et al. 2022): atom stability 99.0 %, molecule
stability 95.2 %, validity 97.7 %.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms

from matgen.data import load_dataset
from matgen.evaluate.edm_bonds import (
    ALLOWED_VALENCES,
    EDM_MARGINS,
    BondMargins,
    bond_orders,
    stable_atoms,
)
from matgen.evaluate.molecules3d import (
    edm_rdkit_mol,
    edm_smiles,
    edm_training_smiles,
    evaluate_molecules_3d,
    training_smiles_from_coordinates,
)
from matgen.evaluate.report import EvaluationReport

# MMFF geometries (Å); atom order as written.
ETHANOL = (
    ("C", (-0.8544, 0.2235, 0.2418)),
    ("C", (0.3871, -0.3585, -0.4015)),
    ("O", (1.5316, 0.3843, -0.0073)),
    ("H", (-1.7476, -0.3278, -0.0651)),
    ("H", (-0.9749, 1.2758, -0.0359)),
    ("H", (-0.7771, 0.1892, 1.3335)),
    ("H", (0.5283, -1.4032, -0.1080)),
    ("H", (0.3103, -0.3138, -1.4917)),
    ("H", (1.5966, 0.3305, 0.9614)),
)
ACETONITRILE = (
    ("C", (-0.4862, 0.0037, -0.0080)),
    ("C", (0.9754, -0.0075, 0.0161)),
    ("N", (2.1355, -0.0164, 0.0353)),
    ("H", (-0.8696, -0.7591, -0.6922)),
    ("H", (-0.8930, -0.1973, 0.9875)),
    ("H", (-0.8621, 0.9765, -0.3387)),
)
Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "P": 15, "Cl": 17}


def arrays(atoms: tuple) -> tuple[np.ndarray, np.ndarray]:
    return np.array([Z[s] for s, _ in atoms]), np.array([p for _, p in atoms], dtype=float)


def linear(symbols: str, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Atoms ``symbols`` (one letter each) on the x axis, ``spacing`` Å apart."""
    z = np.array([Z[s] for s in symbols])
    return z, np.array([[k * spacing, 0.0, 0.0] for k in range(len(z))])


def expected_orders(n: int, bonds: dict[tuple[int, int], int]) -> np.ndarray:
    out = np.zeros((n, n), dtype=np.int64)
    for (i, j), order in bonds.items():
        out[i, j] = out[j, i] = order
    return out


# ---------------------------------------------------------------------------- bond perception
def test_ethanol_bond_orders_and_stability():
    z, x = arrays(ETHANOL)
    orders = bond_orders(z, x)
    bonds = {(0, 1): 1, (1, 2): 1, (0, 3): 1, (0, 4): 1, (0, 5): 1, (1, 6): 1, (1, 7): 1}
    bonds[(2, 8)] = 1
    np.testing.assert_array_equal(orders, expected_orders(9, bonds))
    assert stable_atoms(z, orders).all()
    assert edm_smiles(z, x) == "[H]OC([H])([H])C([H])([H])[H]"


def test_acetonitrile_has_a_triple_bond():
    z, x = arrays(ACETONITRILE)
    orders = bond_orders(z, x)
    assert orders[1, 2] == 3 and orders[0, 1] == 1
    assert orders.sum(axis=1).tolist() == [4, 4, 3, 1, 1, 1]
    assert stable_atoms(z, orders).all()


def test_co2_has_two_double_bonds():
    # C=O 1.162 Å is 116.2 pm: above the triple threshold 113 + 3 pm, below the double 120 + 5 pm.
    z = np.array([8, 6, 8])
    x = np.array([[-1.162, 0.0, 0.0], [0.0, 0.0, 0.0], [1.162, 0.0, 0.0]])
    orders = bond_orders(z, x)
    np.testing.assert_array_equal(orders, expected_orders(3, {(0, 1): 2, (1, 2): 2}))
    assert stable_atoms(z, orders).all()
    assert edm_smiles(z, x) == "O=C=O"


@pytest.mark.parametrize(
    ("distance", "order"),
    [(1.22, 3), (1.23, 2), (1.38, 2), (1.39, 1), (1.63, 1), (1.6401, 0), (2.0, 0)],
)
def test_carbon_carbon_thresholds(distance, order):
    # C–C lengths 154 / 134 / 120 pm plus margins 10 / 5 / 3 pm; the comparison is strict.
    z, x = linear("CC", distance)
    assert bond_orders(z, x)[0, 1] == order


def test_stretched_bond_is_lost():
    z, x = arrays(ETHANOL)
    oh = x[8] - x[2]
    x[8] = x[2] + oh / np.linalg.norm(oh) * 1.10  # H–O single threshold is 96 + 10 pm
    orders = bond_orders(z, x)
    assert orders[2, 8] == 0 and orders[8].sum() == 0
    stable = stable_atoms(z, orders)
    assert not stable[2] and not stable[8] and stable.sum() == 7
    report = evaluate_molecules_3d([(z, x)])
    assert report.metrics["molecule_stability"] == 0.0
    assert report.metrics["atom_stability"] == pytest.approx(7 / 9)
    # RDKit gives the lone O an implicit H: the molecule sanitizes but has two fragments.
    assert report.metrics["validity"] == 1.0
    assert report.metrics["validity_connected"] == 0.0


def test_custom_margins_change_bonds_and_are_recorded():
    z, x = linear("CC", 1.60)
    tight = BondMargins(single=5.0, double=5.0, triple=3.0)
    assert bond_orders(z, x)[0, 1] == 1
    assert bond_orders(z, x, tight)[0, 1] == 0
    report = evaluate_molecules_3d([arrays(ETHANOL)], margins=tight)
    assert report.settings["bond_margins_pm"] == {"single": 5.0, "double": 5.0, "triple": 3.0}


def test_bond_orders_are_invariant_to_rotation_translation_and_permutation():
    z, x = arrays(ETHANOL)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    perm = rng.permutation(len(z))
    moved = (x @ q.T + rng.normal(size=3))[perm]
    np.testing.assert_array_equal(
        bond_orders(z[perm], moved), bond_orders(z, x)[np.ix_(perm, perm)]
    )


def test_valence_table_multivalent_and_unknown_elements():
    assert ALLOWED_VALENCES["P"] == (3, 5) and ALLOWED_VALENCES["N"] == (3,)
    z = np.array([15, 15, 15, 3])  # P, P, P, Li
    orders = np.zeros((4, 4), dtype=np.int64)
    orders[0, 3] = orders[3, 0] = 3  # fake sums: 3, 5, 4, and Li (no EDM valence)
    orders[1, 1] = 5
    orders[2, 2] = 4
    np.testing.assert_array_equal(stable_atoms(z, orders), [True, True, False, False])


def test_rdkit_graph_has_explicit_hydrogens_and_perceived_bonds():
    mol = edm_rdkit_mol(*arrays(ACETONITRILE))
    assert mol.GetNumAtoms() == 6 and mol.GetNumBonds() == 5
    assert str(mol.GetBondBetweenAtoms(1, 2).GetBondType()) == "TRIPLE"


# ---------------------------------------------------------------------------- metrics
def test_overvalent_molecule_is_unstable_and_invalid_with_reason():
    # NH4 without a charge: N has bond-order sum 4.
    z = np.array([7, 1, 1, 1, 1])
    d = 1.01 / np.sqrt(3)
    x = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]])
    report = evaluate_molecules_3d([(z, x), arrays(ETHANOL)])
    assert report.metrics["molecule_stability"] == 0.5
    assert report.metrics["validity"] == 0.5
    assert [s.index for s in report.invalid] == [0]
    assert "sanitization failed" in report.invalid[0].reason
    assert "valence" in report.invalid[0].reason


def test_bad_input_is_counted_invalid_with_reason_and_never_raises():
    z, x = arrays(ETHANOL)
    nan = x.copy()
    nan[3, 1] = np.nan
    periodic = Atoms(numbers=z, positions=x, cell=np.eye(3) * 10, pbc=True)
    lithium = (np.array([3, 1]), np.array([[0.0, 0, 0], [1.6, 0, 0]]))
    molecules = [
        (z, x),
        (np.zeros(0, dtype=int), np.zeros((0, 3))),
        (z, nan),
        lithium,
        (z, x[:, :2]),
        periodic,
        None,
        (np.array([1, 300]), np.zeros((2, 3))),
    ]
    report = evaluate_molecules_3d(molecules, ids=[f"m{i}" for i in range(8)])
    reasons = {s.index: s.reason for s in report.invalid}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert "no atoms" in reasons[1]
    assert "non-finite position for atom 3" in reasons[2]
    assert "unknown element" in reasons[3] and "Li" in reasons[3]
    assert "shape" in reasons[4]
    assert "periodic" in reasons[5]
    assert "expected (atomic_numbers, positions)" in reasons[6]
    assert "unknown element" in reasons[7]
    assert report.invalid[0].item == "m1"
    assert report.counts["n_bad_input"] == 7
    assert report.metrics["molecule_stability"] == pytest.approx(1 / 8)
    assert report.metrics["validity"] == pytest.approx(1 / 8)
    # Atoms of bad input count as unstable: 9 stable of 9 + 0 + 9 + 2 + 9 + 9 + 0 + 2.
    assert report.counts["n_atoms"] == 40
    assert report.metrics["atom_stability"] == pytest.approx(9 / 40)
    json.loads(report.to_json())


def test_empty_input_gives_no_metrics():
    report = evaluate_molecules_3d([])
    assert report.metrics["validity"] is None and report.counts["n_samples"] == 0


def test_uniqueness_counts_duplicates_once():
    z, x = arrays(ETHANOL)
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    perm = rng.permutation(len(z))
    copy = (z[perm], (x @ q.T + 3.0)[perm])
    report = evaluate_molecules_3d([(z, x), copy, arrays(ACETONITRILE)])
    assert report.metrics["validity"] == 1.0
    assert report.metrics["uniqueness"] == pytest.approx(2 / 3)
    assert report.metrics["validity_x_uniqueness"] == pytest.approx(2 / 3)
    assert report.counts["n_unique"] == 2


def test_novelty_against_given_training_smiles():
    train = training_smiles_from_coordinates([arrays(ETHANOL)])
    assert train == {"[H]OC([H])([H])C([H])([H])[H]"}
    molecules = [arrays(ETHANOL), arrays(ACETONITRILE)]
    report = evaluate_molecules_3d(molecules, train_smiles=train, reference_name="toy")
    assert report.metrics["novelty"] == 0.5
    assert report.counts["n_novel"] == 1
    assert report.settings["novelty_reference"] == "toy (1 SMILES)"
    assert evaluate_molecules_3d(molecules).metrics["novelty"] is None
    from_iterator = evaluate_molecules_3d(molecules, train_smiles=iter(sorted(train)))
    assert from_iterator.metrics["novelty"] == 0.5
    assert from_iterator.settings["novelty_reference"] == "given (1 SMILES)"


def test_training_smiles_keep_every_fragment():
    # Two far-apart molecules: training SMILES is the whole graph, generated SMILES the largest.
    za, xa = arrays(ETHANOL)
    zb, xb = arrays(ACETONITRILE)
    z, x = np.concatenate([za, zb]), np.concatenate([xa, xb + 20.0])
    assert "." in edm_smiles(z, x, fragment="whole")
    assert edm_smiles(z, x) == edm_smiles(za, xa)
    report = evaluate_molecules_3d([(z, x)], validity="connected")
    assert report.metrics["validity"] == 1.0 and report.metrics["validity_connected"] == 0.0
    assert report.metrics["uniqueness"] is None
    assert report.settings["validity"] == "connected"


def test_ase_atoms_and_symbols_are_accepted():
    z, x = arrays(ACETONITRILE)
    symbols = [s for s, _ in ACETONITRILE]
    from_pairs = evaluate_molecules_3d([(z, x)])
    from_atoms = evaluate_molecules_3d([Atoms(numbers=z, positions=x)])
    from_symbols = evaluate_molecules_3d([(symbols, x)])
    assert from_pairs.metrics == from_atoms.metrics == from_symbols.metrics
    assert from_pairs.metrics["molecule_stability"] == 1.0


def test_settings_name_the_protocol():
    report = evaluate_molecules_3d([arrays(ETHANOL)])
    assert isinstance(report, EvaluationReport) and report.task == "molecules-3d"
    assert report.settings["bond_margins_pm"] == EDM_MARGINS.as_dict()
    assert report.settings["validity"] == "edm"
    assert "largest fragment" in report.settings["validity_definition"]
    with pytest.raises(ValueError, match="validity must be one of"):
        evaluate_molecules_3d([], validity="whole")


# ---------------------------------------------------------------------------- real data
def _qm9_pairs(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    c = dataset.collection
    return [c.arrays(i)[:2] for i in range(len(c))]


def test_qm9_test_split_reproduces_edm_data_row(qm9_test):
    """All 13,083 QM9 test molecules with hydrogens vs EDM's published data row."""
    report = evaluate_molecules_3d(_qm9_pairs(qm9_test))
    assert report.counts["n_samples"] == 13083 and report.counts["n_bad_input"] == 0
    assert report.metrics["atom_stability"] == pytest.approx(0.990, abs=0.005)
    assert report.metrics["molecule_stability"] == pytest.approx(0.952, abs=0.005)
    assert report.metrics["validity"] == pytest.approx(0.977, abs=0.005)
    assert report.metrics["uniqueness"] == pytest.approx(1.0, abs=0.001)
    assert len(report.invalid) == report.counts["n_samples"] - report.counts["n_valid"]


@pytest.mark.slow
def test_qm9_training_smiles_cache_and_novelty(qm9_test, tmp_path, monkeypatch):
    """Rebuild QM9 train SMILES (100,000 molecules, ~20-60 s), read them back from the JSON
    cache, and check novelty: ~0 for training molecules, ~1 for the test split."""
    monkeypatch.setenv("MATGEN_CACHE", str(tmp_path))
    train = edm_training_smiles("qm9", "train")
    (cached,) = tmp_path.glob("edm_smiles-*.json")
    record = json.loads(cached.read_text())
    assert record["n_molecules"] == 100000 and len(record["smiles"]) == len(train)
    assert edm_training_smiles("qm9", "train") == train
    assert 95000 < len(train) < 100000

    train_ds = load_dataset("qm9", "train")
    sample = np.random.default_rng(0).choice(len(train_ds), 3000, replace=False)
    c = train_ds.collection
    seen = evaluate_molecules_3d([c.arrays(int(i))[:2] for i in sample], train_smiles=train)
    assert seen.metrics["novelty"] <= 0.002  # only disconnected molecules can differ
    test = evaluate_molecules_3d(_qm9_pairs(qm9_test), train_smiles=train)
    assert test.metrics["novelty"] == pytest.approx(0.999, abs=0.002)
