"""``matgen train lm``, ``matgen generate crystal --model <text model>``, ``matgen generate
molecule`` and ``matgen.load`` / ``matgen.available`` with text models."""

from __future__ import annotations

import csv
import zipfile

import ase.io
import pytest
import yaml

import matgen
from matgen.cli import main
from matgen.generators.lm.checkpoint import save_text_lm
from matgen.generators.lm.generator import TextCrystalGenerator, TextMoleculeGenerator
from matgen.generators.lm.model import build_causal_lm, preset
from matgen.generators.lm.tokenizer import build_tokenizer

IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, root):
    folder = tmp_path_factory.mktemp("lm_cli")
    config = {
        "model": {"preset": "gpt2-tiny"},
        "data": {
            "kind": "crystal",
            "form": "ctl",
            "train": [{"dataset": "perov_5", "split": "train"}],
            "val_fraction": 0.05,
            "max_train": 32,
            "max_val": 8,
            "conditions": ["composition", "spacegroup"],
            "batch_size": 16,
            "prompt_loss": True,
        },
        "training": {"max_epochs": 5, "accelerator": "cpu", "val_every_steps": 2},
        "output": {"dir": str(folder / "run"), "model_dir": str(folder / "unused")},
    }
    (folder / "lm.yaml").write_text(yaml.safe_dump(config))
    args = ["train", "lm", str(folder / "lm.yaml"), "--max-epochs", "1"]
    assert main([*args, "--model-dir", str(folder / "model"), "--max-train", "16"]) == 0
    return folder / "model"


def test_train_lm_applies_the_overrides(trained):
    generator = matgen.load(str(trained))
    card = generator.lm.card
    assert card["metadata"]["n_train"] == 16 and card["metadata"]["epochs"] == 1
    assert card["metadata"]["prompt_loss"] and generator.formula_first_available()


def test_generate_crystal_with_a_text_model(trained, tmp_path, capsys):
    from ase import Atoms

    a, b, c = matgen.load(str(trained)).lm.elements[:3]  # elements the model was trained on
    formula = f"{a}{b}{c}3"
    out = tmp_path / "gen.extxyz"
    args = ["generate", "crystal", "--model", str(trained), "--chunk", "2", "--no-progress"]
    extra = ["--spacegroup", "221", "--temperature", "1.2", "--top-p", "0.95"]
    assert main([*args, "-n", "3", "--composition", formula, *extra, "--out", str(out)]) == 0
    frames = ase.io.read(out, index=":")
    expected = Atoms(formula).get_chemical_formula()
    assert len(frames) == 3 and all(f.get_chemical_formula() == expected for f in frames)
    with zipfile.ZipFile(out.with_suffix(".cif.zip")) as archive:
        assert len(archive.namelist()) == 3
    assert "wrote 3 crystals" in capsys.readouterr().out
    assert main([*args, "-n", "2", "--composition", "Xx2", "--out", str(out)]) == 1
    assert "not an element" in capsys.readouterr().err
    assert main([*args, "-n", "2", "--composition", f"{a}9", "--out", str(out)]) == 1
    assert "max_atoms = 5" in capsys.readouterr().err
    assert main([*args, "-n", "2", "--composition", "Og2", "--out", str(out)]) == 1
    assert "Og unknown to this model" in capsys.readouterr().err
    assert main([*args, "-n", "2", "--property", "band_gap=1", "--out", str(out)]) == 1
    assert "unknown to this model" in capsys.readouterr().err
    assert main([*args, "-n", "2", "--n-atoms", "3", "--out", str(out)]) == 1
    assert "do not apply to a text model" in capsys.readouterr().err
    assert main([*args, "-n", "2", "--enforce-validity", "--out", str(out)]) == 0  # formula first
    assert len(ase.io.read(out, index=":")) == 2
    assert main([*args, "-n", "2", "--body-only", "--out", str(tmp_path / "b.extxyz")]) == 0
    assert len(ase.io.read(tmp_path / "b.extxyz", index=":")) == 2
    assert main([*args, "-n", "2", "--body-only", "--composition", formula, "--out", str(out)]) == 0


@pytest.mark.parametrize("form", ["selfies", "smiles"])
def test_generate_molecule_writes_csv_and_sdf(tmp_path, capsys, form):
    """A random model: SELFIES bodies all decode (cut-off ones too, and are counted); random
    SMILES mostly fail, and their rows carry the reason."""
    from rdkit import Chem

    from matgen.generators.lm.molecule_text import encode_molecules

    bodies, _ = encode_molecules(["CCO", "c1ccccc1O", "CC(=O)N", "C#N"], kind=form)
    tokenizer = build_tokenizer(form, corpus=bodies)
    model = build_causal_lm(preset("gpt2-tiny", n_positions=64), len(tokenizer), **IDS, seed=0)
    folder = save_text_lm(
        model, tokenizer, tmp_path / "mol", kind="molecule", form=form, max_body_tokens=10
    )
    out = tmp_path / "mols.csv"
    args = ["generate", "molecule", "--model", str(folder), "-n", "9", "--chunk", "4"]
    if form == "smiles":
        with pytest.warns(RuntimeWarning, match="did not decode"):
            assert main([*args, "--out", str(out), "--no-progress"]) == 0
    else:
        assert main([*args, "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["index"]) for r in rows] == list(range(9))
    valid = [r for r in rows if r["valid"] == "True"]
    assert all(r["smiles"] and r["text"] for r in valid)
    assert all(r["error"] for r in rows if r["valid"] == "False")
    if form == "selfies":
        assert len(valid) == 9 and all(r["text"].startswith("[") for r in valid)
    else:
        assert len(valid) < 9
    sdf = [m for m in Chem.SDMolSupplier(str(out.with_suffix(".sdf"))) if m is not None]
    assert len(sdf) == len(valid)
    assert not sdf or sdf[0].GetProp("_Name").startswith("sample_")
    printed = capsys.readouterr().out
    assert f"wrote 9 molecules ({len(valid)} valid)" in printed
    if form == "selfies":  # a random model rarely writes <eos> within 15 tokens
        assert "reached the token budget without <eos>" in printed


def test_load_and_available_include_text_models(trained, tmp_path, monkeypatch):
    import shutil

    import matgen.generators.lm.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "MODELS_DIR", tmp_path)
    shutil.copytree(trained, tmp_path / "crystal-lm-test")
    assert "crystal-lm-test" in matgen.available()
    assert isinstance(matgen.load("crystal-lm-test", chunk=2), TextCrystalGenerator)
    assert not isinstance(matgen.load(str(trained)), TextMoleculeGenerator)
    with pytest.raises(FileNotFoundError):
        matgen.load("no-such-generator")
