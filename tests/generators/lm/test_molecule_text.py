"""Molecule texts on real MOSES molecules: SMILES tokens cover the string exactly, SELFIES round
trips give back the same canonical molecule, bad SMILES are skipped with their row and RDKit's
reason, and the SELFIES constraints are set in worker processes and restored afterwards."""

from __future__ import annotations

import time

import pytest
import selfies as sf

from matgen.data.collection import BadItem
from matgen.generators.lm.molecule_text import (
    canonical_smiles,
    decode_molecule,
    encode_molecules,
    selfies_to_smiles,
    smiles_to_selfies,
    split_selfies,
    tokenize_smiles,
)


@pytest.fixture(scope="module")
def moses_test(root):
    from matgen.data import load_dataset

    return load_dataset("moses", "test").smiles


def test_tokenize_smiles():
    assert tokenize_smiles("CC(=O)Nc1ccc(Br)cc1") == [
        "C", "C", "(", "=", "O", ")", "N", "c", "1", "c", "c", "c", "(", "Br", ")", "c", "c", "1",
    ]  # fmt: skip
    assert tokenize_smiles("Cl[nH+]%12/C=C\\[C@@H]") == [
        "Cl", "[nH+]", "%12", "/", "C", "=", "C", "\\", "[C@@H]",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"SMILES 'CC\(X\)': character 3 \('X'\)"):
        tokenize_smiles("CC(X)")


def test_smiles_tokens_cover_moses_exactly(moses_test):
    for smiles in moses_test[:2000]:
        tokens = tokenize_smiles(smiles)
        assert "".join(tokens) == smiles


def test_split_selfies():
    assert split_selfies("[C][=O].[Na+1]") == ["[C]", "[=O]", ".", "[Na+1]"]
    assert split_selfies("") == []
    with pytest.raises(ValueError, match=r"SELFIES '\[C\]O': character 3 \('O'\)"):
        split_selfies("[C]O")


def test_selfies_round_trip_on_2000_moses_molecules(moses_test):
    sample = moses_test[:2000]
    texts, bad = encode_molecules(sample, kind="selfies")
    assert not bad and len(texts) == len(sample)
    same = 0
    for smiles, text in zip(sample, texts, strict=True):
        assert split_selfies(text) == list(sf.split_selfies(text))
        same += canonical_smiles(smiles) == canonical_smiles(selfies_to_smiles(text))
    assert same / len(sample) >= 0.999


def test_smiles_kind_writes_canonical_smiles(moses_test):
    sample = moses_test[:300]
    texts, bad = encode_molecules(sample, kind="smiles")
    assert not bad
    from rdkit import Chem

    for smiles, text in zip(sample, texts, strict=True):
        assert text == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
        assert Chem.MolToSmiles(decode_molecule(text, "smiles")) == text


def test_bad_smiles_are_skipped_with_row_and_reason(moses_test):
    smiles = [moses_test[0], "C1CC", moses_test[1], "CN(C)(C)(C)C", "", moses_test[2]]
    texts, bad = encode_molecules(smiles, kind="selfies")
    assert len(texts) == 3
    assert texts == [smiles_to_selfies(canonical_smiles(s)) for s in moses_test[:3]]
    assert [b.row for b in bad] == [1, 3, 4]
    assert all(isinstance(b, BadItem) for b in bad)
    assert bad[0].item == "C1CC" and "cannot parse" in bad[0].reason
    assert "valence" in bad[1].reason.lower()  # RDKit's own reason
    assert bad[2].reason == "empty SMILES"


def test_workers_and_constraints(moses_test):
    sample = moses_test[:400]
    before = sf.get_semantic_constraints()
    one = encode_molecules(sample, kind="selfies", constraints="octet_rule")
    two = encode_molecules(sample, kind="selfies", constraints="octet_rule", workers=2)
    assert one == two
    # the octet rule forbids hypervalent S and P, which MOSES has (sulfonyl groups): the
    # constraint was in force in the workers
    _, bad = two
    assert bad and all("S" in b.item or "P" in b.item for b in bad)
    default_texts, default_bad = encode_molecules(sample, kind="selfies", workers=2)
    assert not default_bad and len(default_texts) == len(sample)
    assert sf.get_semantic_constraints() == before  # restored in this process
    with pytest.raises(ValueError, match="unknown SELFIES constraints 'strict'"):
        encode_molecules(sample, kind="selfies", constraints="strict")
    with pytest.raises(ValueError, match="unknown molecule text kind 'inchi'"):
        encode_molecules(sample, kind="inchi")


def test_decode_molecule():
    mol = decode_molecule("[C][C][=O]", "selfies")
    assert canonical_smiles("CC=O") == __import__("rdkit.Chem").Chem.MolToSmiles(mol)
    with pytest.raises(ValueError, match="decodes to an empty molecule"):
        decode_molecule("", "selfies")
    with pytest.raises(ValueError, match="cannot parse SMILES 'C1CC'"):
        decode_molecule("C1CC", "smiles")
    with pytest.raises(ValueError, match="unknown molecule text kind 'xyz'"):
        decode_molecule("C", "xyz")


def _round_trip(smiles: str) -> bool:
    try:
        text = smiles_to_selfies(canonical_smiles(smiles))
        return canonical_smiles(selfies_to_smiles(text)) == canonical_smiles(smiles)
    except ValueError:
        return False


@pytest.mark.slow
def test_selfies_round_trip_on_all_of_moses_test(moses_test):
    """>= 99.9% of MOSES test give back the identical canonical SMILES through SELFIES."""
    import os

    from matgen.data.parallel import process_map

    start = time.perf_counter()
    same = process_map(_round_trip, list(moses_test), workers=os.cpu_count(), chunk_size=2000)
    seconds = time.perf_counter() - start
    rate = sum(same) / len(same)
    failures = [s for s, ok in zip(moses_test, same, strict=True) if not ok]
    print(f"\nMOSES test SELFIES round trip: {rate:.5%} of {len(same)} in {seconds:.0f} s")
    print(f"failures ({len(failures)}): {failures[:50]}")
    assert rate >= 0.999
