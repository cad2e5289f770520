"""Prompts and training examples: the exact text of each condition field, validation errors that
name the bad value, condition dropout at the requested rates, and infilling examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher

from matgen.generators.lm.crystal_cif import encode_cif
from matgen.generators.lm.crystal_text import decode_ctl, encode_ctl
from matgen.generators.lm.prompts import (
    CONDITIONS,
    CrystalPrompt,
    infill_example,
    properties_from_row,
    training_text,
)


@pytest.fixture(scope="module")
def crystal(mp20_test):
    """An MP-20 test crystal with all conditions known (NaTiVS4, Cm)."""
    i = 3
    return mp20_test.structure(i), properties_from_row(mp20_test.properties.iloc[i].to_dict())


def test_prompt_text():
    prompt = CrystalPrompt(
        composition={"Sr": 1, "Ti": 1, "O": 3},
        spacegroup=221,
        properties={"e_hull": 0.0, "e_form": -3.456, "band_gap": 1.2},
    )
    # properties are written in the fixed order whatever order they were given in
    assert prompt.text() == "<comp>Sr1Ti1O3<sg>221<e_form>-3.46<band_gap>1.20<e_hull>0.00"
    assert prompt.prefix() == "<bos>" + prompt.text() + "<gen>"
    assert prompt.example("BODY") == prompt.prefix() + "BODY<eos>"
    assert CrystalPrompt().text() == ""
    assert CrystalPrompt(properties={"e_form": -0.001}).text() == "<e_form>0.00"  # no "-0.00"
    assert CrystalPrompt(composition={"O": np.int64(12)}).text() == "<comp>O12"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"composition": {"Xx": 1}}, "unknown element 'Xx'"),
        ({"composition": {"O": 0}}, "count of O is 0; must be >= 1"),
        ({"composition": {"O": 1.5}}, "count of O is 1.5, not an integer"),
        ({"composition": {}}, "composition is empty"),
        ({"composition": {"O": 15, "Ti": 6}, "max_atoms": 20}, "has 21 atoms, more than max"),
        ({"spacegroup": 0}, "spacegroup 0 is not a space group number"),
        ({"spacegroup": 231}, "spacegroup 231"),
        ({"spacegroup": 22.5}, "spacegroup 22.5"),
        ({"properties": {"bandgap": 1.0}}, "unknown property 'bandgap'"),
        ({"properties": {"e_form": math.nan}}, "property e_form = nan is not a finite number"),
        ({"infill": "4.0 4.0 4.0\n"}, "infill body has no <mask>"),
        ({"infill": "<mask>\n", "spacegroup": 2}, "an infill prompt takes no"),
    ],
)
def test_prompt_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CrystalPrompt(**kwargs)


def test_training_text_of_a_real_crystal(crystal):
    structure, properties = crystal
    assert set(properties) == {"spacegroup", "e_form", "band_gap", "e_hull"}
    text = training_text(structure, properties)
    composition = "".join(f"{e.symbol}{round(n)}" for e, n in structure.composition.items())
    expected_prompt = (
        f"<bos><comp>{composition}<sg>{properties['spacegroup']}"
        f"<e_form>{properties['e_form']:.2f}<band_gap>{properties['band_gap']:.2f}"
        f"<e_hull>{properties['e_hull']:.2f}<gen>"
    )
    assert text == expected_prompt + encode_ctl(structure) + "<eos>"
    body = text.split("<gen>")[1].removesuffix("<eos>")
    assert StructureMatcher().fit(structure, decode_ctl(body))


def test_training_text_cif_form_and_precomputed_body(crystal):
    structure, properties = crystal
    body = encode_cif(structure)
    text = training_text(structure, properties, form="cif")
    assert text.endswith("<gen>" + body + "<eos>")
    assert training_text(structure, properties, body="BODY").endswith("<gen>BODY<eos>")
    with pytest.raises(ValueError, match="unknown crystal text form 'xyz'"):
        training_text(structure, properties, form="xyz")


def test_missing_values_leave_fields_out(mp20_test):
    props = mp20_test.properties
    row = int(np.flatnonzero(props["formation_energy_per_atom"].isna().to_numpy())[0])
    properties = properties_from_row(props.iloc[row].to_dict())
    assert "e_form" not in properties and "spacegroup" in properties
    text = training_text(mp20_test.structure(row), properties)
    assert "<e_form>" not in text and "<sg>" in text
    # None and NaN given explicitly are absent too
    text = training_text(mp20_test.structure(row), {"e_form": None, "band_gap": math.nan})
    assert "<e_form>" not in text and "<band_gap>" not in text


def test_condition_dropout_rates(crystal):
    structure, properties = crystal
    rng = np.random.default_rng(0)
    n = 2000
    drop = {"composition": 0.1, "spacegroup": 0.5, "e_form": 0.9}
    texts = [
        training_text(structure, properties, drop_prob=drop, rng=rng, body="B") for _ in range(n)
    ]
    tokens = {"composition": "<comp>", "spacegroup": "<sg>", "e_form": "<e_form>"}
    for name, p in drop.items():
        kept = sum(tokens[name] in t for t in texts) / n
        # binomial standard deviation <= 0.0112 for n = 2000; allow 4 of them
        assert abs(kept - (1 - p)) < 0.045, (name, kept)
    assert all("<band_gap>" in t and "<e_hull>" in t for t in texts)  # never dropped
    # one probability for all: everything dropped gives the unconditional example
    texts = [training_text(structure, properties, drop_prob=1.0, rng=rng, body="B")]
    assert texts == ["<bos><gen>B<eos>"]
    # field order is kept whatever is dropped
    some = training_text(structure, properties, drop_prob=0.5, rng=np.random.default_rng(3))
    positions = [some.find(t) for t in ("<comp>", "<sg>", "<e_form>", "<band_gap>", "<e_hull>")]
    present = [p for p in positions if p >= 0]
    assert present == sorted(present)


def test_training_text_errors(crystal):
    structure, properties = crystal
    with pytest.raises(ValueError, match=r"unknown properties \['energy'\]"):
        training_text(structure, {"energy": 1.0})
    with pytest.raises(ValueError, match=r"drop_prob: unknown conditions \['sg'\]"):
        training_text(structure, properties, drop_prob={"sg": 0.5}, rng=np.random.default_rng())
    with pytest.raises(ValueError, match="drop_prob > 0 needs an rng"):
        training_text(structure, properties, drop_prob=0.5)
    assert set(CONDITIONS) == {"composition", "spacegroup", "e_form", "band_gap", "e_hull"}


def test_infill_example_ctl(crystal):
    structure, _ = crystal
    element = "S"
    text = infill_example(structure, element)
    assert text.startswith("<bos><infill>") and text.endswith(f"<gen>{element}<eos>")
    masked = text.removeprefix("<bos><infill>").split("<gen>")[0]
    n_sites = sum(site.specie.symbol == element for site in structure)
    assert masked.count("<mask>") == n_sites
    assert masked.replace("<mask>", element) == encode_ctl(structure)
    assert f"\n{element}\n" not in masked


def test_infill_example_cif_masks_every_element_token(crystal):
    structure, _ = crystal
    text = infill_example(structure, "Na", form="cif")
    masked = text.removeprefix("<bos><infill>").split("<gen>")[0]
    assert "Na" not in masked and masked.replace("<mask>", "Na") == encode_cif(structure)
    with pytest.raises(ValueError, match="'Fe' is not an element of"):
        infill_example(structure, "Fe")
