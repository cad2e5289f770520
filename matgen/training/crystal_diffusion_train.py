"""``matgen train crystal-diffusion CONFIG``: a YAML file in, a weights-only checkpoint out.

The YAML (see ``configs/crystal_diffusion/*.yaml``) has four sections:

``model``     ``preset`` of the denoiser (:mod:`matgen.generators.crystal.denoiser_config`),
              ``denoiser`` overrides, and :class:`CrystalDiffusionConfig` fields (``timesteps``,
              ``sigma_min``, ``sigma_max``, ``csp_fraction``, ``weights``, ``max_atoms``).
              ``elements``: a list of atomic numbers, or ``data`` (those of the training set).
              Conditions: ``properties`` (``[{name, low, high}]``), ``chemsys_condition``,
              ``cond_dropout`` and ``denoiser.cond_dim``. ``init_from``: a checkpoint to
              fine-tune (its architecture is kept; adapters for the conditions are added,
              zero-initialised, as MatterGen does); its loss settings (``weights``, merged
              key by key, ``type_ce_weight``, ``csp_fraction``) may be changed.
``data``      ``train`` and ``val``: lists of sources, each ``{dataset, split}`` (a registered
              CDVAE-style set) or ``{path}`` (an ``AtomsCollection`` ``.npz`` written by
              :func:`prepare_sources`, for machines without pymatgen); or ``val_fraction``
              instead of ``val`` (a share of ``train`` held out, drawn with ``split_seed``,
              default 0, not with the training seed: :mod:`matgen.training.splits`);
              ``batch_size``.
``training``  ``max_epochs``, ``max_time`` (``DD:HH:MM:SS``), ``dtype``, ``seed``,
              ``accelerator``, ``devices``, ``strategy``, ``lr``, ``ema_decay``,
              ``val_every``, ``scheduler_patience``.
``output``    ``dir`` for Lightning logs and checkpoints, ``checkpoint`` for the exported model.

A rerun with the same ``output.dir`` resumes from its last Lightning checkpoint. Cells are
Niggli-reduced once when a registered set is read (:func:`prepare_collection`).
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from matgen.data.collection import AtomsCollection
from matgen.generators.crystal.checkpoint import save_crystal_diffusion
from matgen.generators.crystal.dataset import CrystalDataset, prepare_collection
from matgen.generators.crystal.denoiser_config import preset
from matgen.generators.crystal.model import CrystalDiffusionConfig
from matgen.training.splits import rows_digest, split_seed_of, validation_split

__all__ = [
    "hold_out",
    "load_config",
    "load_sources",
    "prepare_sources",
    "train_crystal_diffusion",
    "write_card",
]


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a training YAML; every section must be present."""
    config = yaml.safe_load(Path(path).read_text())
    for section in ("model", "data", "training", "output"):
        if section not in (config or {}):
            raise ValueError(f"{path}: no '{section}' section")
    return config


def load_sources(sources: list[dict[str, Any]]) -> AtomsCollection:
    """One collection from registered splits (Niggli-reduced here) and prepared ``.npz`` files."""
    parts = []
    for source in sources:
        if "path" in source:
            parts.append(AtomsCollection.load(source["path"]))
        else:
            from matgen.data import load_dataset

            data = load_dataset(source["dataset"], source["split"], progress=False)
            parts.append(prepare_collection(data.collection))
    if len(parts) == 1:
        return parts[0]
    return _concatenate(parts)


def prepare_sources(config: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write each ``data`` split as a prepared ``.npz`` under ``out_dir``; returns a copy of the
    config whose ``data`` sources point at them (for a training machine without pymatgen)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {**config, "data": dict(config["data"])}
    for split in ("train", "val", "test"):
        if split in config["data"]:
            path = out_dir / f"{split}.npz"
            load_sources(config["data"][split]).save(path)
            config["data"][split] = [{"path": str(path)}]
    return config


def _concatenate(parts: list[AtomsCollection]) -> AtomsCollection:
    import pandas as pd

    counts = np.concatenate([p.n_atoms for p in parts])
    return AtomsCollection(
        numbers=np.concatenate([p.numbers for p in parts]),
        positions=np.concatenate([p.positions for p in parts]),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        cell=np.concatenate([p.cell for p in parts]),
        pbc=np.concatenate([p.pbc for p in parts]),
        properties=pd.concat([p.properties for p in parts], ignore_index=True),
    )


#: Loss settings a fine-tuning config (``init_from``) may change; they touch no parameter.
_LOSS_SETTINGS = ("weights", "type_ce_weight", "csp_fraction")


def hold_out(
    collection: AtomsCollection, data_cfg: dict[str, Any]
) -> tuple[AtomsCollection, AtomsCollection, dict[str, Any]]:
    """Training and validation parts of ``collection``: a ``val_fraction`` (default 0.05) of
    its rows, drawn with ``data.split_seed``; and the card fields that name them."""
    seed = split_seed_of(data_cfg)
    fraction = float(data_cfg.get("val_fraction", 0.05))
    train_rows, val_rows = validation_split(len(collection), fraction, seed)
    fields = {"split_seed": seed, "val_rows_sha256": rows_digest(val_rows)}
    return collection.subset(train_rows), collection.subset(val_rows), fields


def model_config(config: dict[str, Any], train: AtomsCollection) -> CrystalDiffusionConfig:
    """The model configuration, with ``elements: data`` resolved from the training set (or the
    fine-tuned checkpoint's with its conditions added, for ``init_from``)."""
    spec = dict(config["model"])
    if "init_from" in spec:
        base = _fine_tuned(spec).config
        loss = {key: spec[key] for key in _LOSS_SETTINGS if key in spec}
        if "weights" in loss:
            loss["weights"] = {**base.weights, **loss["weights"]}
        return replace(base, **loss)
    elements = spec.pop("elements", "data")
    if elements == "data":
        elements = sorted({int(z) for z in np.unique(train.numbers)})
    denoiser = preset(
        spec.pop("preset", "cpu-small"), elements=tuple(elements), **spec.pop("denoiser", {})
    )
    if "max_atoms" not in spec:
        spec["max_atoms"] = int(train.n_atoms.max())
    return CrystalDiffusionConfig(denoiser=denoiser, **spec)


def _fine_tuned(spec: dict[str, Any]) -> Any:
    from matgen.generators.crystal.checkpoint import load_crystal_diffusion

    base = load_crystal_diffusion(spec["init_from"])
    return base.with_conditions(
        properties=spec.get("properties", ()),
        chemsys_condition=bool(spec.get("chemsys_condition", False)),
        cond_dim=int(spec.get("denoiser", {}).get("cond_dim", 64)),
        cond_dropout=float(spec.get("cond_dropout", 0.1)),
    )


def architecture_label(cfg: CrystalDiffusionConfig) -> str:
    """The data card's one-line description of a model's architecture."""
    frames = (
        "frame-averaged over the Niggli frames of the lattice"
        if cfg.denoiser.canonicalize
        else "run in the cell it is given"
    )
    return f"CrystalDiffusion (CSPNet-style denoiser, {frames})"


def train_crystal_diffusion(config: dict[str, Any], *, log: Any = print) -> Path:
    """Train, export the best EMA weights with a data card; returns the checkpoint path."""
    import pytorch_lightning as pl

    from matgen.training.crystal_diffusion_module import (
        BestCrystalExport,
        CrystalDataModule,
        CrystalDiffusionModule,
    )

    train_cfg, out_cfg, data_cfg = config["training"], config["output"], config["data"]
    seed = int(train_cfg.get("seed", 0))
    pl.seed_everything(seed, workers=True)
    train = load_sources(data_cfg["train"])
    held_out: dict[str, Any] = {}
    if "val" in data_cfg:
        val = load_sources(data_cfg["val"])
    else:
        train, val, held_out = hold_out(train, data_cfg)
    cfg = model_config(config, train)
    names = [p["name"] for p in cfg.properties]
    train_set = CrystalDataset(train, cfg.denoiser.elements, properties=names, name="train")
    val_set = CrystalDataset(val, cfg.denoiser.elements, properties=names, name="val")
    dtype = getattr(torch, train_cfg.get("dtype", "float32"))
    counts = train_set.atom_count_histogram().tolist()
    module = CrystalDiffusionModule(
        cfg.to_dict(),
        counts,
        lr=float(train_cfg.get("lr", 1e-3)),
        ema_decay=float(train_cfg.get("ema_decay", 0.999)),
        scheduler_patience=int(train_cfg.get("scheduler_patience", 30)),
    ).to(dtype)
    if "init_from" in config["model"]:
        state = _fine_tuned(config["model"]).state_dict()
        module.model.load_state_dict(state)
        module.ema.load_state_dict(state)
    data = CrystalDataModule(
        train_set,
        val_set,
        batch_size=int(data_cfg.get("batch_size", 256)),
        val_batch_size=int(data_cfg.get("val_batch_size", 512)),
        seed=seed,
        dtype=dtype,
    )
    out_dir = Path(out_cfg["dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    best = BestCrystalExport(out_dir / "best_ema.pt")
    trainer = pl.Trainer(
        max_epochs=int(train_cfg["max_epochs"]),
        max_time=train_cfg.get("max_time"),
        accelerator=train_cfg.get("accelerator", "auto"),
        devices=train_cfg.get("devices", 1),
        strategy=train_cfg.get("strategy", "auto"),
        callbacks=[
            pl.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True),
            best,
        ],
        logger=pl.loggers.CSVLogger(out_dir, name="logs"),
        enable_progress_bar=bool(train_cfg.get("progress_bar", False)),
        log_every_n_steps=int(train_cfg.get("log_every_n_steps", 50)),
        check_val_every_n_epoch=int(train_cfg.get("val_every", 10)),
        gradient_clip_val=train_cfg.get("gradient_clip", 1.0),
        num_sanity_val_steps=0,
        limit_train_batches=train_cfg.get("limit_train_batches"),
        limit_val_batches=train_cfg.get("limit_val_batches"),
    )
    last = out_dir / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    log(
        f"training on {len(train_set)} crystals ({len(cfg.denoiser.elements)} elements), "
        f"validating on {len(val_set)}; {sum(p.numel() for p in module.model.parameters()):,} "
        "parameters"
    )
    trainer.fit(
        module,
        datamodule=data,
        ckpt_path=str(last) if last.is_file() else None,
        weights_only=True,  # resuming never unpickles code
    )
    wall = time.perf_counter() - start
    model = module.averaged_model()
    chosen = {"epoch": int(trainer.current_epoch), "selected": "last EMA"}
    if best.path.is_file():
        from matgen.generators.crystal.checkpoint import load_crystal_diffusion

        model = load_crystal_diffusion(best.path, dtype=dtype)
        chosen = {**model.metadata, "selected": "best validation loss (EMA)"}
        chosen.pop("sha256", None)
        chosen.pop("checkpoint", None)
    metadata = {
        "architecture": architecture_label(cfg),
        "training_config": config,
        "training_data": {
            "train": data_cfg["train"],
            "val": data_cfg.get("val", f"{data_cfg.get('val_fraction', 0.05)} of train"),
            **held_out,
        },
        "n_train": len(train_set),
        "n_val": len(val_set),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "export": chosen,
        "train_seconds": round(best.train_seconds, 1),
        "wall_time_s": round(wall, 1),
        "device": str(trainer.strategy.root_device),
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "host": platform.node(),
        "torch": torch.__version__,
    }
    target = Path(out_cfg.get("checkpoint", out_dir / "model.pt"))
    save_crystal_diffusion(model, target, metadata=metadata)
    write_card(target)
    log(f"wrote {target} and {target.with_suffix('.json')}")
    return target


def write_card(checkpoint: str | Path, evaluation: dict[str, Any] | None = None) -> Path:
    """Write (or update) the data card ``NAME.json`` beside a checkpoint: its metadata, sha256,
    and ``evaluation`` results merged into the card's ``evaluation`` section (keyed by what was
    measured; the checkpoint itself is not rewritten)."""
    import hashlib
    import json

    checkpoint = Path(checkpoint)
    card_path = checkpoint.with_suffix(".json")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card.update(
        {
            "checkpoint": checkpoint.name,
            "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            "config": payload["config"],
            **payload["metadata"],
        }
    )
    card.setdefault("evaluation", {}).update(evaluation or {})
    card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    return card_path
