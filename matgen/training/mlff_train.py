"""``matgen train mlff CONFIG``: one YAML file in, a weights-only checkpoint with its data card out.

The YAML (see ``configs/mlff/*.yaml``) has four sections:

``model``     ``preset`` name and field ``overrides`` of :class:`matgen.mlff.config.MACEConfig`;
              or ``init_from``, a checkpoint (shipped name or path) whose architecture,
              statistics and weights the training starts from (fine-tuning).
``data``      ``train`` source, ``val`` source or ``val_fraction`` (rows drawn with ``split_seed``,
              default 0, not with the training seed, so that a rerun with another seed or a
              fine-tune of a model on the same data holds out the same rows), ``test`` sources,
              ``atomic_energies`` (``fit``, a source of isolated atoms, or ``{Z: eV}``),
              ``energy_scale`` (recorded in the data card: ``mp`` for MP-scale energies),
              ``batch_size``. A source is ``{dataset, split}`` or ``{path}``, with ``keys``.
``training``  ``max_epochs``, ``max_time`` (``DD:HH:MM:SS``, the training time in total: a
              resumed run counts the time of the runs before it), ``dtype`` (float64 /
              float32), ``seed``, ``accelerator``, ``devices``, ``strategy``, loss ``weights``
              and ``optim`` (see :mod:`.mlff_module`), ``export``: ``best`` (default, the EMA
              weights of the best validation loss of the last stage) or ``last`` (the EMA
              weights at the end, for runs whose validation rows the starting model has seen).
``output``    ``dir`` for Lightning logs and checkpoints, ``checkpoint`` for the exported model.

A rerun with the same ``output.dir`` resumes from its last Lightning checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

from matgen.mlff.checkpoint import load_model, save_model
from matgen.mlff.config import preset
from matgen.mlff.evaluation import evaluate_potential, format_errors
from matgen.mlff.statistics import (
    isolated_atom_energies,
    load_configurations,
    training_statistics,
)
from matgen.training.mlff_module import BestEMAExport, MLFFDataModule, MLFFModule
from matgen.training.splits import rows_digest, split_seed_of, validation_split

__all__ = ["load_config", "train_mlff"]

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the training config ({exc})") from exc
    for section in ("model", "data", "training", "output"):
        if section not in config:
            raise ValueError(f"{path}: missing section {section!r}")
    return config


def _atomic_energies(spec: Any) -> dict[int, float] | None:
    if spec is None or spec == "fit":
        return None
    if isinstance(spec, dict) and ("dataset" in spec or "path" in spec):
        return isolated_atom_energies(load_configurations(spec))
    if isinstance(spec, dict):
        return {int(z): float(e) for z, e in spec.items()}
    raise ValueError(f"atomic_energies must be 'fit', a data source or {{Z: eV}}, got {spec!r}")


def train_mlff(config: dict[str, Any], *, log: Any = print) -> Path:
    """Train, export the EMA weights, evaluate on the test sources; returns the checkpoint."""
    started = time.time()
    model_cfg, data_cfg = config["model"], config["data"]
    train_cfg, out_cfg = config["training"], config["output"]
    seed = int(train_cfg.get("seed", 0))
    export = train_cfg.get("export", "best")
    if export not in ("best", "last"):
        raise ValueError(f"training.export must be 'best' or 'last', got {export!r}")
    pl.seed_everything(seed, workers=True)
    dtype = DTYPES[train_cfg.get("dtype", "float64")]
    initial = None
    if model_cfg.get("init_from"):
        if "preset" in model_cfg or "overrides" in model_cfg:
            raise ValueError("model: give init_from or preset/overrides, not both")
        initial = load_model(model_cfg["init_from"], dtype=torch.float64)
        r_max = initial.config.r_max
        log(f"starting from {model_cfg['init_from']} (its architecture, statistics and weights)")
    else:
        base = preset(model_cfg["preset"], elements=(1,), **model_cfg.get("overrides", {}))
        r_max = base.r_max

    train_set = load_configurations(data_cfg["train"], cutoff=r_max)
    if initial is not None:
        model_config = initial.config
        statistics = {
            key: getattr(model_config, key)
            for key in ("elements", "atomic_energies", "avg_num_neighbors", "scale", "shift")
        }
        missing = sorted(
            {int(z) for z in np.unique(train_set.collection.numbers)} - set(model_config.elements)
        )
        if missing:
            raise ValueError(
                f"{model_cfg['init_from']} has no weights for elements {missing} of the "
                f"training data (it knows {list(model_config.elements)})"
            )
    else:
        stats = training_statistics(
            train_set,
            r_max=r_max,
            elements=model_cfg.get("elements"),
            atomic_energies=_atomic_energies(data_cfg.get("atomic_energies", "fit")),
        )
        model_config = base.replace(**stats.as_config())
        statistics = stats.as_config()
        log(f"statistics: {stats}")

    items = [train_set[i].to(dtype=dtype) for i in range(len(train_set))]
    if "val" in data_cfg:
        val_set = load_configurations(data_cfg["val"], cutoff=r_max)
        val_items = [val_set[i].to(dtype=dtype) for i in range(len(val_set))]
        train_items = items
        validation: dict[str, Any] = {"source": data_cfg["val"], "configurations": len(val_items)}
    else:
        seed_of_split = split_seed_of(data_cfg)
        train_rows, val_rows = validation_split(
            len(items), float(data_cfg.get("val_fraction", 0.05)), seed_of_split
        )
        train_items = [items[i] for i in train_rows]
        val_items = [items[i] for i in val_rows]
        validation = {
            "split_seed": seed_of_split,
            "configurations": len(val_rows),
            "rows_sha256": rows_digest(val_rows),
        }
    log(f"{len(train_items)} training and {len(val_items)} validation configurations")

    module = MLFFModule(
        model_config.to_dict(),
        weights=train_cfg.get("weights"),
        optim=train_cfg.get("optim"),
    )
    if initial is not None:
        module.model.load_state_dict(initial.state_dict())
        module.ema.load_state_dict(initial.state_dict())
    module = module.to(dtype)
    data = MLFFDataModule(
        train_items,
        val_items,
        batch_size=int(data_cfg.get("batch_size", 5)),
        val_batch_size=int(data_cfg.get("val_batch_size", 32)),
        seed=seed,
    )
    out_dir = Path(out_cfg["dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True)
    best = BestEMAExport(out_dir / "best_ema.pt")
    trainer = pl.Trainer(
        max_epochs=int(train_cfg["max_epochs"]),
        max_time=train_cfg.get("max_time"),  # "DD:HH:MM:SS": stop (and checkpoint) after this
        accelerator=train_cfg.get("accelerator", "auto"),
        devices=train_cfg.get("devices", 1),
        strategy=train_cfg.get("strategy", "auto"),  # e.g. "ddp" across devices or nodes
        inference_mode=False,  # validation needs gradients for forces
        callbacks=[checkpoints, best],
        logger=pl.loggers.CSVLogger(out_dir, name="logs"),
        enable_progress_bar=bool(train_cfg.get("progress_bar", False)),
        log_every_n_steps=int(train_cfg.get("log_every_n_steps", 50)),
        check_val_every_n_epoch=int(train_cfg.get("val_every", 1)),
        gradient_clip_val=train_cfg.get("gradient_clip", 10.0),
        deterministic=False,
        limit_train_batches=train_cfg.get("limit_train_batches"),
        limit_val_batches=train_cfg.get("limit_val_batches"),
        num_sanity_val_steps=0,
    )
    last = out_dir / "checkpoints" / "last.ckpt"
    trainer.fit(
        module,
        datamodule=data,
        ckpt_path=str(last) if last.is_file() else None,
        weights_only=True,  # resuming never unpickles code
    )
    if export == "best" and best.path.is_file():
        model = load_model(best.path, dtype=torch.float64)
    else:
        if export == "best":
            log("no validation result was saved: exporting the EMA weights at the end")
            export = "last"
        model = module.averaged_model().to(torch.float64)
        model.metadata = {}
    extra = {
        "epochs": int(trainer.current_epoch),
        "export": export,
        "validation": validation,
        "best_epoch": model.metadata.get("epoch"),  # None for export: last
        "train_seconds": round(best.train_seconds, 1),
        "wall_time_s": round(time.time() - started, 1),
        "device": str(trainer.strategy.root_device),
        "torch_threads": torch.get_num_threads(),
    }
    return finish_run(config, model, statistics, extra, log=log)


def finish_run(
    config: dict[str, Any],
    model: torch.nn.Module,
    statistics: dict[str, Any],
    extra: dict[str, Any],
    *,
    log: Any = print,
) -> Path:
    """Evaluate ``model`` on the config's test sources and write the checkpoint and data card."""
    data_cfg, out_cfg = config["data"], config["output"]
    metrics: dict[str, Any] = {}
    for source in data_cfg.get("test", []):
        name = (
            source.get("name")
            or f"{source.get('dataset', source.get('path'))}:{source.get('split', '')}"
        )
        test_set = load_configurations(source)
        metrics[name] = evaluate_potential(model, test_set, dtype=torch.float64)
        log(format_errors(metrics[name], title=f"test {name}"))
    metadata = {
        "architecture": "MACE",
        "training_config": config,
        "training_data": data_cfg["train"],
        "statistics": statistics,
        "test_metrics": metrics,
        **extra,
    }
    if "energy_scale" in data_cfg:  # e.g. "mp": energies on MP's elemental scale
        metadata["energy_scale"] = data_cfg["energy_scale"]
    target = Path(out_cfg.get("checkpoint", Path(out_cfg["dir"]) / "model.pt"))
    save_model(model, target, metadata=metadata)
    card = target.with_suffix(".json")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    card_data = {"checkpoint": target.name, "sha256": digest, **metadata}
    card.write_text(json.dumps(card_data, indent=2, default=str) + "\n")
    log(f"wrote {target} and {card}")
    return target


def export_run(config: dict[str, Any], *, log: Any = print) -> Path:
    """Export the EMA weights of a run's last Lightning checkpoint (after an interrupted or
    finished run) without training further."""
    last = Path(config["output"]["dir"]) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"no Lightning checkpoint at {last}")
    state = torch.load(last, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    module = MLFFModule(
        hparams["model_config"], weights=hparams.get("weights"), optim=hparams.get("optim")
    )
    missing, _ = module.load_state_dict(
        {
            k: v
            for k, v in state["state_dict"].items()
            if not k.endswith((".conv_tp.weight", ".conv_tp.output_mask"))
        },
        strict=False,
    )
    missing = [k for k in missing if "._compiled_main" not in k]
    if missing:
        raise ValueError(f"{last}: checkpoint lacks {missing[:5]}")
    model = module.averaged_model().to(torch.float64)
    extra = {"epochs": int(state["epoch"]) + 1, "export": "last", "exported_from": str(last)}
    for callback_state in state.get("callbacks", {}).values():
        if isinstance(callback_state, dict) and "train_seconds" in callback_state:
            extra["train_seconds"] = round(float(callback_state["train_seconds"]), 1)
    stats = {
        k: hparams["model_config"][k]
        for k in ("elements", "atomic_energies", "avg_num_neighbors", "scale", "shift")
    }
    return finish_run(config, model, stats, extra, log=log)
