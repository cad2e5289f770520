"""QM9 3D coordinates -> RDKit (bonds perceived with rdDetermineBonds) -> canonical SMILES."""

from __future__ import annotations

import numpy as np
from rdkit import Chem, RDLogger

from matgen.data import DataError, load_dataset


def _canonical(mol: Chem.Mol) -> str:
    """Canonical SMILES without hydrogens or stereo (the data set's SMILES carry no 3D stereo)."""
    mol = Chem.Mol(mol)
    Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)


def test_qm9_coordinates_give_the_data_set_smiles(qm9_test):
    RDLogger.DisableLog("rdApp.*")
    smiles = load_dataset("qm9_smiles", "test")
    rng = np.random.default_rng(0)
    index = rng.choice(len(qm9_test), 1000, replace=False)
    mismatches = []
    for i in index:
        expected = _canonical(Chem.MolFromSmiles(smiles.smiles[i]))
        try:
            got = _canonical(qm9_test.mol(int(i)))
        except DataError as exc:
            got = f"<{exc.reason}>"
        if got != expected:
            mismatches.append((qm9_test.item_id(int(i)), smiles.smiles[i], got))
    for gdb_index, reference, got in mismatches:
        print(f"QM9 index {gdb_index}: data set {reference}  perceived {got}")
    assert len(mismatches) <= 10, f"{len(mismatches)} of 1000 differ"
