"""Training the force field end to end on a slice of real data: Lightning module, YAML config,
export, CLI evaluation; the loss goes down and the exported model reloads weights-only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from ase.io import write

from matgen.cli import main
from matgen.data import load_dataset
from matgen.mlff.checkpoint import load_model
from matgen.mlff.statistics import load_configurations, training_statistics
from matgen.training.mlff_module import stage_two_due
from matgen.training.mlff_train import (
    export_run,
    load_config,
    train_mlff,
)
from matgen.training.splits import rows_digest, validation_split


@pytest.fixture(scope="module")
def ethanol_file(tmp_path_factory, root):
    data = load_dataset("ethanol", "train")
    path = tmp_path_factory.mktemp("eth") / "ethanol40.extxyz"
    write(path, [data.atoms(i) for i in range(40)], format="extxyz")
    return path


def _config(tmp_path, train_path, **training):
    return {
        "model": {
            "preset": "cpu-small",
            "overrides": {"hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "radial_mlp": [16]},
        },
        "data": {
            "train": {"path": str(train_path)},
            "val_fraction": 0.1,
            "atomic_energies": {"dataset": "ethanol", "split": "isolated_atoms"},
            "test": [{"path": str(train_path), "name": "train40"}],
            "batch_size": 4,
        },
        "training": {
            "max_epochs": 3,
            "dtype": "float64",
            "seed": 1,
            "accelerator": "cpu",
            "weights": {"energy": 1.0, "forces": 10.0},
            "optim": {"lr": 0.01, "stage_two_fraction": 0.34},
        }
        | training,
        "output": {"dir": str(tmp_path / "run"), "checkpoint": str(tmp_path / "model.pt")},
    }


def test_statistics_on_ethanol(root):
    data = load_configurations("ethanol:train")
    iso = {1: -13.568422383046626, 6: -1025.2770951782686, 8: -2035.5709809589698}
    stats = training_statistics(data, r_max=5.0, atomic_energies=iso)
    assert stats.elements == (1, 6, 8)
    assert stats.avg_num_neighbors == pytest.approx(8.0)  # every atom sees the 8 others
    forces = data.collection.atom_arrays["forces"]
    assert stats.scale == pytest.approx(np.sqrt((forces**2).mean()))
    fitted = training_statistics(data, r_max=5.0)
    # fitted reference energies reproduce the energies better than the isolated atoms do
    assert abs(fitted.shift) < abs(stats.shift)


def test_train_export_reload_and_cli_eval(tmp_path, ethanol_file, capsys):
    config = _config(tmp_path, ethanol_file)
    path = train_mlff(config, log=lambda *_: None)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["epochs"] >= 2 and card["test_metrics"]["train40"]["forces"]["mae"] > 0
    # stage two starts at epoch 2 of 3, and the exported model is the best of stage two
    assert card["best_epoch"] == 2 and card["train_seconds"] > 0
    # 4 of the 40 rows are held out with split seed 0, whatever the training seed (here 1)
    held_out = validation_split(40, 0.1, 0)[1]
    assert card["validation"] == {
        "split_seed": 0,
        "configurations": 4,
        "rows_sha256": rows_digest(held_out),
    }
    assert card["export"] == "best"
    model = load_model(path)  # weights-only load of the exported EMA weights
    assert model.config.elements == (1, 6, 8)
    losses = _losses(tmp_path / "run", "val_forces_mae_meV_A")
    assert losses[-1] < losses[0]  # it learns
    assert (
        main(["mlff", "eval", str(path), str(ethanol_file), "--json", str(tmp_path / "e.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert "forces H" in out and "energy_per_atom" in out
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["forces"]["mae"] == pytest.approx(
        card["test_metrics"]["train40"]["forces"]["mae"], rel=1e-6
    )


def test_rerun_resumes_from_the_last_checkpoint(tmp_path, ethanol_file):
    config = _config(tmp_path, ethanol_file, max_epochs=1)
    train_mlff(config, log=lambda *_: None)
    config["training"]["max_epochs"] = 2
    path = train_mlff(config, log=lambda *_: None)
    card = json.loads(path.with_suffix(".json").read_text())
    epochs = [int(r.split(",")[0]) for r in _csv_rows(tmp_path / "run")]
    assert card["epochs"] == 2 and set(epochs) >= {0, 1}
    # the last checkpoint's EMA weights can be exported again without training
    exported = export_run(config, log=lambda *_: None)
    again = json.loads(exported.with_suffix(".json").read_text())
    assert again["exported_from"].endswith("last.ckpt") and again["epochs"] == 2
    assert again["train_seconds"] > 0


def test_fine_tuning_starts_from_a_checkpoint(tmp_path, ethanol_file):
    """init_from: the starting weights are the checkpoint's (same test error before training),
    and a short fine-tune on the same data does not make them worse; unknown elements fail."""
    config = _config(tmp_path / "a", ethanol_file, max_epochs=2)
    start = train_mlff(config, log=lambda *_: None)
    before = json.loads(start.with_suffix(".json").read_text())["test_metrics"]["train40"]
    tuned = _config(tmp_path / "b", ethanol_file, max_epochs=2)
    tuned["model"] = {"init_from": str(start)}
    tuned["training"]["optim"] = {"lr": 1e-4, "stage_two_fraction": 0.0}
    tuned["training"]["export"] = "last"
    path = train_mlff(tuned, log=lambda *_: None)
    after = json.loads(path.with_suffix(".json").read_text())
    exported = load_model(path)
    # export: last gives the EMA weights at the end, which export_run reads from last.ckpt
    assert after["export"] == "last" and after["best_epoch"] is None and after["epochs"] == 2
    tuned["output"]["checkpoint"] = str(tmp_path / "b" / "again.pt")
    again = load_model(export_run(tuned, log=lambda *_: None))
    for key, value in exported.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert after["training_config"]["model"] == {"init_from": str(start)}
    assert load_model(path).config == load_model(start).config
    assert after["test_metrics"]["train40"]["forces"]["mae"] <= 1.05 * before["forces"]["mae"]

    silicon = tmp_path / "si.extxyz"
    si = load_dataset("mlearn_Si", "train")
    write(silicon, [si.atoms(0)], format="extxyz")
    bad = _config(tmp_path / "c", silicon)
    bad["model"] = {"init_from": str(start)}
    bad["data"].pop("atomic_energies")
    with pytest.raises(ValueError, match=r"no weights for elements \[14\]"):
        train_mlff(bad, log=lambda *_: None)
    bad["model"]["preset"] = "cpu-small"
    with pytest.raises(ValueError, match="not both"):
        train_mlff(bad, log=lambda *_: None)


def test_yaml_configs_in_the_repository_parse(root):
    from pathlib import Path

    from matgen.mlff.checkpoint import checkpoint_path
    from matgen.mlff.config import preset

    for path in sorted(Path(__file__).parents[2].joinpath("configs", "mlff").glob("*.yaml")):
        config = load_config(path)
        if "init_from" in config["model"]:
            assert checkpoint_path(config["model"]["init_from"]).is_file()
        else:
            overrides = config["model"].get("overrides", {})
            preset(config["model"]["preset"], elements=(1,), **overrides)
        assert yaml.safe_load(path.read_text())["output"]["checkpoint"]


def _csv_rows(run):
    rows = []
    for f in sorted(run.glob("logs/version_*/metrics.csv")):
        rows += f.read_text().splitlines()[1:]
    return rows


def _losses(run, column):
    losses = []
    for f in sorted(run.glob("logs/version_*/metrics.csv")):
        lines = f.read_text().splitlines()
        col = lines[0].split(",").index(column)
        losses += [float(r.split(",")[col]) for r in lines[1:] if r.split(",")[col]]
    return losses


def test_validation_split_ignores_the_training_seed(tmp_path, ethanol_file):
    # two runs that differ only in the training seed hold out the same rows
    cards = []
    for seed in (0, 5):
        config = _config(tmp_path / str(seed), ethanol_file, seed=seed, limit_train_batches=1)
        config["data"].pop("test")
        path = train_mlff(config, log=lambda *_: None)
        cards.append(json.loads(path.with_suffix(".json").read_text())["validation"])
    assert cards[0] == cards[1]
    assert cards[0]["rows_sha256"] == rows_digest(validation_split(40, 0.1, 0)[1])
    train, val = validation_split(40, 0.1)
    assert len(val) == 4 and sorted(train + val) == list(range(40))
    assert (train, val) == validation_split(40, 0.1, 0)  # the default is split seed 0
    other = validation_split(40, 0.1, 2)[1]
    assert other != val and len(other) == 4
    assert len(validation_split(1000, 0.05)[1]) == 50
    with pytest.raises(ValueError, match="val_fraction"):
        validation_split(40, 1.5)
    train, val = validation_split(2, 0.75)  # 0.75 of 2 rounds to 2: one row is kept to train on
    assert len(train) == 1 and len(val) == 1


def test_stage_two_starts_by_epochs_or_by_the_clock():
    # by epochs: the last 20% of 10 epochs are epochs 8 and 9
    assert [stage_two_due(e, 10, 0.2) for e in (7, 8, 9)] == [False, True, True]
    # by the clock, when it runs out before the epochs do
    assert stage_two_due(1, 500, 0.2, elapsed_s=81.0, budget_s=100.0)
    assert not stage_two_due(1, 500, 0.2, elapsed_s=79.0, budget_s=100.0)
    assert not stage_two_due(1, 500, 0.2, elapsed_s=79.0, budget_s=None)
    assert not stage_two_due(9, 10, 0.0, elapsed_s=99.0, budget_s=100.0)


def test_stage_two_hook_reads_the_trainer_clock():
    """The module's epoch hook switches the loss and learning rate once the Timer callback
    (Lightning's ``max_time``) has used 80% of its budget, long before 80% of the epochs."""
    from datetime import timedelta
    from types import SimpleNamespace

    from matgen.mlff.config import preset
    from matgen.training.mlff_module import MLFFModule

    config = preset(
        "cpu-small",
        elements=(1, 8),
        hidden_irreps="4x0e + 4x1o",
        max_ell=1,
        radial_mlp=(8,),
    )
    module = MLFFModule(config.to_dict(), optim={"stage_two_fraction": 0.2, "stage_two_lr": 1e-4})
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    timer = pl.callbacks.Timer(duration=timedelta(seconds=100))
    trainer = SimpleNamespace(
        max_epochs=500, current_epoch=3, callbacks=[timer], optimizers=[optimizer]
    )
    module._trainer = trainer
    timer.load_state_dict({"time_elapsed": {"train": 70.0}})  # 70 of 100 s spent
    module.on_train_epoch_start()
    assert not module._stage_two and optimizer.param_groups[0]["lr"] == 0.01
    timer.load_state_dict({"time_elapsed": {"train": 85.0}})
    module.on_train_epoch_start()
    assert module._stage_two and optimizer.param_groups[0]["lr"] == 1e-4
    assert module.current_weights() == module.optim.stage_two


def test_bad_config_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {preset: cpu-small}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: missing section 'data'"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"training\.export must be 'best' or 'last'"):
        train_mlff(_config(tmp_path, tmp_path / "unread.extxyz", export="final"))
    torch.manual_seed(0)
