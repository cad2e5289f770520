"""extxyz and ASE-database readers with configurable keys; QM9 arrays; SMILES tables."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest

from matgen.data import (
    DataError,
    TargetKeys,
    load_dataset,
    read_ase_db,
    read_extxyz,
    read_smiles_csv,
)


def test_mlearn_stress_is_ase_sign_and_3x3(root):
    data = load_dataset("mlearn_Si", "train").collection
    stress = data.system_arrays["stress"]
    assert stress.shape == (214, 3, 3)
    np.testing.assert_allclose(stress, stress.transpose(0, 2, 1))
    assert data.atom_arrays["forces"].shape == (int(data.n_atoms.sum()), 3) == (13_233, 3)
    # The README's conversion: stress = -virial_stress[[0,1,2,4,5,3]] * 0.1 GPa (eV/Å^3).
    raw = ase.io.read(root / "mlff/mlearn/Si_train.extxyz.gz", index=0)
    virial = np.asarray(raw.info["virial_stress_kbar_vasp_order"], dtype=float)
    from ase.units import GPa

    voigt = -virial[[0, 1, 2, 4, 5, 3]] * 0.1 * GPa
    np.testing.assert_allclose(stress[0][[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], voigt, rtol=1e-6)


def test_custom_key_names_ref_energy_and_forces(root, tmp_path):
    frames = ase.io.read(root / "mlff/ethanol/train.xyz.gz", index=":5")
    expected_e = [a.get_potential_energy() for a in frames]
    expected_f = [a.get_forces() for a in frames]
    for atoms, e, f in zip(frames, expected_e, expected_f, strict=True):
        atoms.calc = None
        atoms.info["REF_energy"] = e
        atoms.arrays["REF_forces"] = f
    path = tmp_path / "ref.extxyz"
    ase.io.write(path, frames, format="extxyz")
    data = read_extxyz(
        path, keys=TargetKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress")
    )
    np.testing.assert_allclose(data.system_arrays["energy"], expected_e)
    np.testing.assert_allclose(data.atom_arrays["forces"], np.concatenate(expected_f))
    assert "stress" not in data.system_arrays
    assert data.properties["config_type"].tolist() == ["Training_set"] * 5
    # Default keys find no energy in this file: NaN, not a crash.
    assert np.isnan(read_extxyz(path).system_arrays["energy"]).all()


def test_ase_database_round_trip(root, tmp_path):
    frames = ase.io.read(root / "mlff/mlearn/Mo_test.extxyz.gz", index=":")
    path = tmp_path / "mo.db"
    with ase.db.connect(path) as db:
        for k, atoms in enumerate(frames):
            db.write(atoms, key_value_pairs={"config_type": atoms.info["config_type"], "frame": k})
    data = read_ase_db(path)
    reference = read_extxyz(root / "mlff/mlearn/Mo_test.extxyz.gz")
    assert len(data) == len(reference) == 23
    np.testing.assert_allclose(data.positions, reference.positions)
    np.testing.assert_allclose(data.system_arrays["energy"], reference.system_arrays["energy"])
    np.testing.assert_allclose(data.atom_arrays["forces"], reference.atom_arrays["forces"])
    np.testing.assert_allclose(
        data.system_arrays["stress"], reference.system_arrays["stress"], atol=1e-12
    )
    assert data.properties["frame"].tolist() == list(range(23))
    assert len(read_ase_db(path, selection="frame<5")) == 5
    with pytest.raises(DataError, match=r"missing\.db: database file not found"):
        read_ase_db(tmp_path / "missing.db")


def test_malformed_extxyz_names_file_and_frame(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text(
        "2\nProperties=species:S:1:pos:R:3 energy=1.0\nH 0 0 0\nH 0 0 0.7\n3\n\nH 0 0 0\nXq 1 2\n"
    )
    with pytest.raises(DataError, match=r"bad\.xyz, row 1: malformed extxyz frame"):
        read_extxyz(path)


def test_qm9_arrays_agree_with_qm9_smiles(qm9_test, root):
    smiles = load_dataset("qm9_smiles", "test")
    assert (qm9_test.properties["index"].to_numpy() == smiles.properties["index"].to_numpy()).all()
    np.testing.assert_allclose(qm9_test.properties["gap_Ha"], smiles.properties["gap_Ha"])
    assert (qm9_test.collection.n_atoms == smiles.properties["n_atoms"].to_numpy()).all()
    assert set(np.unique(qm9_test.collection.numbers)) == {1, 6, 7, 8, 9}
    assert not qm9_test.collection.pbc.any()


def test_smiles_reader_errors(tmp_path):
    (tmp_path / "none.csv").write_text("name,value\na,1\n")
    with pytest.raises(DataError, match=r"none\.csv: no SMILES column"):
        read_smiles_csv(tmp_path / "none.csv")
    (tmp_path / "gap.csv").write_text("SMILES,n\nCCO,1\nc1ccccc1,2\n,3\n")
    with pytest.raises(DataError, match=r"gap\.csv, row 2: empty SMILES"):
        read_smiles_csv(tmp_path / "gap.csv")


def test_smiles_dataset_gives_molecules(root):
    test = load_dataset("moses", "test")
    assert test[0] == test.smiles[0]
    assert test.mol(0).GetNumAtoms() > 5
