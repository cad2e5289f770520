"""Tokenizers: fixed special ids, atomic tokens exactly as specified, exact decoding of bodies,
agreement with the pure-Python splitter, and save/load."""

from __future__ import annotations

import numpy as np
import pytest

from matgen.generators.lm.crystal_cif import CIF_KEYWORDS, encode_cif
from matgen.generators.lm.crystal_text import ELEMENT_SYMBOLS
from matgen.generators.lm.molecule_text import encode_molecules, tokenize_smiles
from matgen.generators.lm.prompts import properties_from_row, training_text
from matgen.generators.lm.tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    load_tokenizer,
    split_text,
    tokenizer_kind,
)


@pytest.fixture(scope="module")
def ctl():
    return build_tokenizer("crystal-ctl")


@pytest.fixture(scope="module")
def cif():
    return build_tokenizer("crystal-cif")


@pytest.fixture(scope="module")
def crystals(mp20_test):
    rows = np.linspace(0, len(mp20_test) - 1, 60).astype(int)
    return [
        (mp20_test.structure(i), properties_from_row(mp20_test.properties.iloc[i].to_dict()))
        for i in rows
    ]


@pytest.fixture(scope="module")
def moses_smiles(root):
    from matgen.data import load_dataset

    return load_dataset("moses", "test").smiles[:500]


def _body_ids(tokenizer, ids):
    gen = tokenizer.convert_tokens_to_ids("<gen>")
    eos = tokenizer.convert_tokens_to_ids("<eos>")
    return ids[ids.index(gen) + 1 : ids.index(eos)]


def test_special_tokens_have_fixed_ids(ctl, cif):
    selfies = build_tokenizer("selfies", corpus=["[C][=O]"])
    smiles = build_tokenizer("smiles", corpus=["C=O"])
    for tokenizer in (ctl, cif, selfies, smiles):
        vocab = tokenizer.get_vocab()
        assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
        assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
        assert (tokenizer.unk_token_id, tokenizer.mask_token_id) == (3, 5)
        assert sorted(tokenizer.all_special_ids) == list(range(len(SPECIAL_TOKENS)))


def test_ctl_vocabulary(ctl):
    vocab = ctl.get_vocab()
    assert len(vocab) == len(SPECIAL_TOKENS) + 14 + 118
    assert all(e in vocab for e in ELEMENT_SYMBOLS)
    assert all(c in vocab for c in "0123456789.- \n")


def test_ctl_examples_tokenize_atomically_and_decode_exactly(ctl, crystals):
    rng = np.random.default_rng(0)
    for structure, properties in crystals:
        text = training_text(structure, properties, rng=rng, translate=True)
        ids = ctl(text)["input_ids"]
        tokens = ctl.convert_ids_to_tokens(ids)
        assert tokens == split_text("crystal-ctl", text)
        assert ctl.unk_token_id not in ids
        body = text.split("<gen>")[1].removesuffix("<eos>")
        # every body token is a single character or one element symbol
        body_tokens = ctl.convert_ids_to_tokens(_body_ids(ctl, ids))
        assert all(len(t) == 1 or t in ELEMENT_SYMBOLS for t in body_tokens)
        elements = [t for t in body_tokens if t.isalpha()]
        assert elements == [site.specie.symbol for site in structure]
        assert ctl.decode(_body_ids(ctl, ids), skip_special_tokens=True) == body
        assert ctl.decode(ids) == text


def test_ctl_prompt_tokens(ctl):
    text = "<bos><comp>Sn2S4<sg>221<e_form>-0.57<band_gap>1.20<e_hull>0.00<gen>"
    tokens = ctl.convert_ids_to_tokens(ctl(text)["input_ids"])
    assert tokens[:8] == ["<bos>", "<comp>", "Sn", "2", "S", "4", "<sg>", "2"]
    assert tokens[10:16] == ["<e_form>", "-", "0", ".", "5", "7"]
    assert tokens[-1] == "<gen>" and ctl.unk_token_id not in ctl(text)["input_ids"]


def test_unknown_characters_become_unk_in_both_splitters(ctl):
    text = "<bos><gen>4.0 x.0 Ab\n<eos>"
    tokens = ctl.convert_ids_to_tokens(ctl(text)["input_ids"])
    assert tokens == [
        "<unk>" if t not in ctl.get_vocab() else t for t in split_text("crystal-ctl", text)
    ]
    assert tokens.count("<unk>") == 3  # x, A, b


def test_cif_bodies_tokenize_atomically_and_decode_exactly(cif, crystals):
    for structure, _ in crystals[::6]:
        body = encode_cif(structure)
        text = f"<bos><gen>{body}<eos>"
        ids = cif(text)["input_ids"]
        tokens = cif.convert_ids_to_tokens(ids)
        assert tokens == split_text("crystal-cif", text)
        assert cif.unk_token_id not in ids
        assert cif.decode(_body_ids(cif, ids), skip_special_tokens=True) == body
        keywords = [line.split(" ")[0] for line in body.splitlines() if line.startswith("_")]
        assert all(k in tokens for k in keywords) and set(keywords) <= set(CIF_KEYWORDS)
        symbol = body.split("_symmetry_space_group_name_H-M ")[1].split("\n")[0]
        assert symbol in tokens  # the space-group symbol is one token


def test_cif_space_group_symbols_are_tokens_only_after_the_hm_name(cif):
    # "Cm" is both curium and space group 8; "P1" is also a site label
    text = "data_Cm\n_symmetry_space_group_name_H-M Cm\nCm P1 1 0.0000 0.0000 0.0000 1\n"
    tokens = split_text("crystal-cif", text)
    assert tokens[:3] == ["data_", "Cm", "\n"]
    assert cif.convert_ids_to_tokens(cif(text)["input_ids"]) == tokens
    assert "P1" not in tokens and tokens.count("Cm") == 3


def test_selfies_tokenizer_from_a_moses_corpus(moses_smiles):
    texts, bad = encode_molecules(moses_smiles, kind="selfies")
    assert not bad
    tokenizer = build_tokenizer("selfies", corpus=texts)
    vocab = tokenizer.get_vocab()
    symbols = {s for t in texts for s in split_text("selfies", t)}
    assert set(vocab) == set(SPECIAL_TOKENS) | symbols
    for body in texts[:100]:
        ids = tokenizer(f"<bos><gen>{body}<eos>")["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert all(t.startswith("[") for t in tokenizer.convert_ids_to_tokens(ids[2:-1]))
        assert tokenizer.decode(ids[2:-1]) == body
    # a symbol outside the corpus is <unk>, not split into characters
    assert tokenizer("[C][Xe+3]")["input_ids"] == [vocab["[C]"], tokenizer.unk_token_id]


def test_smiles_tokenizer_from_a_moses_corpus(moses_smiles):
    texts, _ = encode_molecules(moses_smiles, kind="smiles")
    tokenizer = build_tokenizer("smiles", corpus=texts)
    for body in texts[:100]:
        ids = tokenizer(body)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == tokenize_smiles(body)
        assert tokenizer.decode(ids) == body
    ids = tokenizer("CCl")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["C", "Cl"]


def test_vocabulary_order_is_by_frequency():
    tokenizer = build_tokenizer("selfies", corpus=["[O][C][C]", "[C]", "<bos><gen>[N][C]<eos>"])
    assert tokenizer.convert_ids_to_tokens([12, 13, 14]) == ["[C]", "[N]", "[O]"]


def test_save_and_load(tmp_path, ctl):
    selfies = build_tokenizer("selfies", corpus=["[C][=O]", "[N][Ring1]"])
    for name, tokenizer in (("ctl", ctl), ("selfies", selfies)):
        tokenizer.save_pretrained(tmp_path / name)
        loaded = load_tokenizer(tmp_path / name)
        assert tokenizer_kind(loaded) == tokenizer_kind(tokenizer)
        assert loaded.get_vocab() == tokenizer.get_vocab()
        text = "<bos><comp>O2<gen>5.0 5.0 5.0\n90 90 90\nO\n0.00 0.00 0.00\n<eos>[C][=O]"
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        ids = tokenizer(text)["input_ids"]
        assert loaded.decode(ids) == tokenizer.decode(ids)
    assert tokenizer_kind(ctl) == "crystal-ctl"


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer kind 'xyz'"):
        build_tokenizer("xyz")
    with pytest.raises(ValueError, match="needs a corpus"):
        build_tokenizer("smiles")
    with pytest.raises(ValueError, match=r"corpus item 1: \['x'\] are not in the fixed"):
        build_tokenizer("crystal-ctl", corpus=["4.0 4.0 4.0\n", "4.x\n"])
    with pytest.raises(ValueError, match=r"corpus item 0: SELFIES 'C\[O\]': character 0"):
        build_tokenizer("selfies", corpus=["C[O]"])
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
