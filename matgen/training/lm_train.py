"""``matgen train lm CONFIG``: a YAML file in, a text-model directory out.

The YAML (see ``configs/lm/*.yaml``) has four sections:

``model``     ``preset`` (:data:`matgen.generators.lm.model.PRESETS`) and ``overrides`` of its
              :class:`~matgen.generators.lm.model.LMConfig` fields; or ``init_from``: a local
              model directory to fine-tune (a matgen text model keeps its tokenizer; any other
              ``transformers`` causal LM gets the data's tokenizer and resized, fully trained
              embeddings), optionally with ``lora: {r, alpha, dropout, target_modules}``
              (adapters merged into the exported model).
``data``      ``kind`` (``crystal`` | ``molecule``) and ``form`` (``ctl`` | ``cif`` |
              ``selfies`` | ``smiles``); ``train``: sources ``{dataset, split}`` of registered
              sets (MP-20-style CSVs for crystals, SMILES sets for molecules); ``val`` sources or
              ``val_fraction`` (a share of train held out, drawn with ``split_seed``, default 0,
              not with the training seed: :mod:`matgen.training.splits`); ``max_train`` /
              ``max_val`` (subsamples drawn with the same seed, e.g. part of MOSES for a CPU
              run); ``batch_size``.
              Crystals: ``conditions`` (prompt fields among ``composition``, ``spacegroup``,
              ``e_form``, ``band_gap``, ``e_hull``), ``drop_prob`` (each dropped independently),
              ``infill_fraction``, ``translate``, ``site_order`` (``given`` | ``sorted``, ctl
              only: see :func:`~matgen.generators.lm.crystal_text.encode_ctl`; the card records
              it), ``prompt_loss`` (the loss also covers the
              prompt, so the model can write its own composition before the structure; the
              card records it and free sampling then goes formula first). Molecules:
              ``workers`` for SMILES -> SELFIES.
``training``  ``max_epochs``, ``max_time`` (``DD:HH:MM:SS``), ``max_steps``, ``lr``,
              ``weight_decay``, ``warmup_steps``, ``total_steps`` (default: epochs x batches),
              ``min_lr_ratio``, ``ema_decay``, ``gradient_clip``, ``precision`` (``32-true`` |
              ``bf16-mixed``), ``val_every_steps``, ``checkpoint_every_steps``, ``seed``,
              ``threads``, ``accelerator``, ``fast_dev_run``, ``limit_*_batches``.
``output``    ``dir`` (Lightning logs, ``checkpoints/last.ckpt``, the data's tokenizer and the
              best model so far) and ``model_dir`` (the exported model directory).

Every epoch draws new crystal texts (translation, condition dropout, infilling); batches are
length-bucketed so that padding is negligible. A rerun with the same ``output.dir`` resumes from
``last.ckpt``.
"""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from matgen.training.lm_data import (
    CrystalExamples,
    LengthBucketSampler,
    MoleculeExamples,
    TokenizedExamples,
    collate_examples,
)
from matgen.training.splits import rows_digest, split_seed_of

__all__ = ["build_sources", "load_config", "parse_duration", "train_text_lm"]

TOKENIZER_KIND = {
    "ctl": "crystal-ctl",
    "cif": "crystal-cif",
    "selfies": "selfies",
    "smiles": "smiles",
}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a training YAML; every section must be present."""
    config = yaml.safe_load(Path(path).read_text())
    for section in ("model", "data", "training", "output"):
        if section not in (config or {}):
            raise ValueError(f"{path}: no '{section}' section")
    return config


def parse_duration(text: str | None) -> float | None:
    """``"DD:HH:MM:SS"`` (or ``HH:MM:SS``, ``MM:SS``) in seconds."""
    if text is None:
        return None
    parts = [float(p) for p in str(text).split(":")]
    seconds = 0.0
    for unit, value in zip((1, 60, 3600, 86400), reversed(parts), strict=False):
        seconds += unit * value
    return seconds


def _site_order(value: Any, form: str) -> str:
    from matgen.generators.lm.crystal_text import SITE_ORDERS

    if value not in SITE_ORDERS:
        raise ValueError(f"data.site_order {value!r} unknown; expected one of {SITE_ORDERS}")
    if value != "given" and form != "ctl":
        raise ValueError(f"data.site_order {value!r} applies to the ctl form only, not {form!r}")
    return str(value)


def _subsample(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or int(limit) >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=int(limit), replace=False))


# ---------------------------------------------------------------------------- data
def _crystal_rows(sources: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, float]]]:
    """Per row of the sources, its ``(collection, index)`` and its prompt values (MP-20 columns;
    NaN left out). Structures are built later, only for the rows kept."""
    from matgen.data import load_dataset
    from matgen.generators.lm.prompts import properties_from_row

    rows, conditions = [], []
    for source in sources:
        collection = load_dataset(source["dataset"], source["split"], progress=False).collection
        for i, row in enumerate(collection.properties.to_dict("records")):
            rows.append((collection, i))
            conditions.append(properties_from_row(row))
    return rows, conditions


def _structures(rows: list[Any], index: np.ndarray) -> list[Any]:
    return [rows[i][0].structure(rows[i][1]) for i in index]


def _molecule_rows(sources: list[dict[str, Any]]) -> list[str]:
    from matgen.data import load_dataset

    smiles: list[str] = []
    for source in sources:
        smiles.extend(load_dataset(source["dataset"], source["split"]).smiles)
    return smiles


def _split(
    data_cfg: dict[str, Any], n_total: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of train (and of val when held out of train)."""
    if "val" in data_cfg:
        return _subsample(n_total, data_cfg.get("max_train"), rng), None
    order = rng.permutation(n_total)
    n_val = max(1, round(float(data_cfg.get("val_fraction", 0.02)) * n_total))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    train = train[_subsample(len(train), data_cfg.get("max_train"), rng)]
    val = val[_subsample(len(val), data_cfg.get("max_val"), rng)]
    return train, val


def _held_out(data_cfg: dict[str, Any], seed: int, val_idx: np.ndarray) -> dict[str, Any]:
    """Card fields of the validation rows when they are held out of train."""
    if "val" in data_cfg:
        return {}
    return {"split_seed": seed, "val_rows_sha256": rows_digest(val_idx.tolist())}


def build_sources(config: dict[str, Any], *, log: Any = print) -> dict[str, Any]:
    """The training and validation example sources of a config.

    Returns:
        ``{"train", "val"}`` example sources, ``"info"`` (sizes, skipped items, max atoms) and,
        for molecules, ``"corpus"`` (the training bodies, for the tokenizer's vocabulary).
    """
    data_cfg = config["data"]
    kind, form = data_cfg.get("kind", "crystal"), data_cfg.get("form", "ctl")
    seed_of_split = split_seed_of(data_cfg)
    rng = np.random.default_rng([seed_of_split, 11])
    if kind == "crystal":
        rows, conditions = _crystal_rows(data_cfg["train"])
        train_idx, val_idx = _split(data_cfg, len(rows), rng)
        if val_idx is None:
            v_rows, v_cond = _crystal_rows(data_cfg["val"])
            val_idx = _subsample(len(v_rows), data_cfg.get("max_val"), rng)
        else:
            v_rows, v_cond = rows, conditions
        settings = {
            "form": form,
            "use": tuple(data_cfg.get("conditions", CrystalExamples.use)),
            "drop_prob": float(data_cfg.get("drop_prob", 0.5)),
            "infill_fraction": float(data_cfg.get("infill_fraction", 0.1)),
            "translate": bool(data_cfg.get("translate", True)),
            "site_order": _site_order(data_cfg.get("site_order", "given"), form),
        }
        train = CrystalExamples(
            _structures(rows, train_idx), [conditions[i] for i in train_idx], **settings
        )
        val = CrystalExamples(
            _structures(v_rows, val_idx), [v_cond[i] for i in val_idx], **settings
        )
        info = {
            "n_train": len(train),
            "n_val": len(val),
            **_held_out(data_cfg, seed_of_split, val_idx),
            "max_atoms": int(max(len(s) for s in train.structures)),
            "elements": sorted({site.specie.symbol for s in train.structures for site in s}),
        }
        return {"train": train, "val": val, "info": info}
    if kind != "molecule":
        raise ValueError(f"data.kind {kind!r} unknown; use crystal or molecule")
    from matgen.generators.lm.molecule_text import encode_molecules

    smiles = _molecule_rows(data_cfg["train"])
    train_idx, val_idx = _split(data_cfg, len(smiles), rng)
    if val_idx is None:
        v_smiles = _molecule_rows(data_cfg["val"])
        val_idx = _subsample(len(v_smiles), data_cfg.get("max_val"), rng)
    else:
        v_smiles = smiles
    workers = int(data_cfg.get("workers", 1))
    start = time.perf_counter()
    bodies, bad = encode_molecules([smiles[i] for i in train_idx], kind=form, workers=workers)
    v_bodies, v_bad = encode_molecules([v_smiles[i] for i in val_idx], kind=form, workers=workers)
    log(
        f"{len(bodies)} training and {len(v_bodies)} validation molecules as {form} "
        f"({len(bad)} + {len(v_bad)} malformed SMILES skipped) in {time.perf_counter() - start:.0f} s"
    )
    info = {
        "n_train": len(bodies),
        "n_val": len(v_bodies),
        **_held_out(data_cfg, seed_of_split, val_idx),
        "n_skipped_malformed": len(bad) + len(v_bad),
        "skipped_examples": [f"{b.item}: {b.reason}" for b in (bad + v_bad)[:20]],
    }
    return {
        "train": MoleculeExamples(bodies),
        "val": MoleculeExamples(v_bodies),
        "info": info,
        "corpus": bodies,
    }


# ---------------------------------------------------------------------------- model
def _tokenizer(config: dict[str, Any], sources: dict[str, Any], out_dir: Path) -> Any:
    """The run's tokenizer: the fine-tuned model's, the one saved by an earlier run of this
    ``output.dir`` (so a resume sees the same ids), or a new one."""
    from matgen.generators.lm.tokenizer import build_tokenizer, load_tokenizer

    init = config["model"].get("init_from")
    if init and (Path(init) / "matgen.json").is_file():
        return load_tokenizer(init)
    saved = out_dir / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    form = config["data"].get("form", "ctl")
    tokenizer = build_tokenizer(TOKENIZER_KIND[form], corpus=sources.get("corpus"))
    tokenizer.save_pretrained(saved)
    return tokenizer


def _ids(tokenizer: Any) -> dict[str, int]:
    return {
        "pad_token_id": tokenizer.convert_tokens_to_ids("<pad>"),
        "bos_token_id": tokenizer.convert_tokens_to_ids("<bos>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<eos>"),
    }


def _model(config: dict[str, Any], tokenizer: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    """The network to train and a description for the card."""
    from matgen.generators.lm.model import build_causal_lm, preset

    spec = config["model"]
    if "init_from" not in spec:
        lm_config = preset(spec.get("preset", "gpt2-small"), **spec.get("overrides", {}))
        model = build_causal_lm(lm_config, len(tokenizer), **_ids(tokenizer), seed=seed)
        return model.train(), {"preset": spec.get("preset"), "config": lm_config.to_dict()}
    from matgen.generators.lm.lora import add_lora, load_pretrained_lm

    model = load_pretrained_lm(spec["init_from"])
    own_vocab = (Path(spec["init_from"]) / "matgen.json").is_file()
    if not own_vocab:  # a foreign base: our tokens, new embedding rows
        model.resize_token_embeddings(len(tokenizer))
        for key, value in _ids(tokenizer).items():
            setattr(model.config, key, value)
            setattr(model.generation_config, key, value)
    described = {"init_from": str(spec["init_from"])}
    if "lora" in spec:
        lora = dict(spec["lora"])
        save = None if own_vocab else _embedding_names(model)
        model = add_lora(model, **lora, modules_to_save=save)
        described["lora"] = lora
    return model.train(), described


def _embedding_names(model: Any) -> list[str]:
    names = []
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        for name, candidate in model.named_modules():
            if candidate is module and name:
                names.append(name.rsplit(".", 1)[-1])
                break
    return sorted(set(names))


def _loader(
    dataset: TokenizedExamples,
    batch_size: int,
    tokenizer: Any,
    *,
    shuffle: bool,
    seed: int,
    prompt_loss: bool = False,
):
    from torch.utils.data import DataLoader

    collate = functools.partial(
        collate_examples,
        pad_id=tokenizer.convert_tokens_to_ids("<pad>"),
        gen_id=tokenizer.convert_tokens_to_ids("<gen>"),
        prompt_loss=prompt_loss,
        infill_id=tokenizer.convert_tokens_to_ids("<infill>") if prompt_loss else None,
    )
    sampler = LengthBucketSampler(dataset, batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate)


# ---------------------------------------------------------------------------- training
def train_text_lm(config: dict[str, Any], *, log: Any = print) -> Path:
    """Train (or resume), export the best validation-loss weights with a data card; returns
    the model directory."""
    import pytorch_lightning as pl

    from matgen.generators.lm.checkpoint import save_text_lm
    from matgen.generators.lm.model import count_parameters
    from matgen.training.lm_module import BestTextExport, TextLMModule

    train_cfg, out_cfg, data_cfg = config["training"], config["output"], config["data"]
    seed = int(train_cfg.get("seed", 0))
    if train_cfg.get("threads"):
        torch.set_num_threads(int(train_cfg["threads"]))
    pl.seed_everything(seed, workers=True, verbose=False)
    start = time.perf_counter()
    out_dir = Path(out_cfg["dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    kind, form = data_cfg.get("kind", "crystal"), data_cfg.get("form", "ctl")

    sources = build_sources(config, log=log)
    info = sources["info"]
    tokenizer = _tokenizer(config, sources, out_dir)
    train_set = TokenizedExamples(sources["train"], tokenizer, seed=seed, redraw=kind == "crystal")
    val_set = TokenizedExamples(sources["val"], tokenizer, seed=seed + 1, redraw=False, name="val")
    model, described = _model(config, tokenizer, seed)
    longest = int(max(train_set.lengths.max(), val_set.lengths.max()))
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    if limit is not None and longest > limit:
        raise ValueError(
            f"the longest example has {longest} tokens but the model takes {limit}: raise "
            "model.overrides.n_positions or lower max_atoms"
        )
    batch_size = int(data_cfg.get("batch_size", 32))
    steps_per_epoch = -(-len(train_set) // batch_size)
    max_epochs = int(train_cfg.get("max_epochs", 10))
    total_steps = int(
        train_cfg.get("total_steps") or train_cfg.get("max_steps") or max_epochs * steps_per_epoch
    )
    max_time = train_cfg.get("max_time")
    module = TextLMModule(
        model,
        lr=float(train_cfg.get("lr", 1e-3)),
        weight_decay=float(train_cfg.get("weight_decay", 0.1)),
        warmup_steps=int(train_cfg.get("warmup_steps", 200)),
        total_steps=total_steps,
        max_seconds=parse_duration(max_time),
        min_lr_ratio=float(train_cfg.get("min_lr_ratio", 0.1)),
        ema_decay=train_cfg.get("ema_decay"),
    )
    body_lengths = _body_lengths(train_set, tokenizer)
    card_fields = {
        "kind": kind,
        "form": form,
        "conditions": list(data_cfg.get("conditions", [])) if kind == "crystal" else [],
        "max_atoms": info.get("max_atoms"),
        "elements": info.get("elements"),
        "max_body_tokens": int(body_lengths.max()),
    }
    best_dir = out_dir / "best"

    def save_best(exported: torch.nn.Module, meta: dict[str, Any]) -> Path:
        return save_text_lm(exported, tokenizer, best_dir, **card_fields, metadata=meta)

    best = BestTextExport(save_best)
    every = int(train_cfg.get("checkpoint_every_steps", 200))
    val_every = int(train_cfg.get("val_every_steps", 500))
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        max_steps=int(train_cfg.get("max_steps", -1)),
        max_time=max_time,
        accelerator=train_cfg.get("accelerator", "auto"),
        devices=train_cfg.get("devices", 1),
        precision=train_cfg.get("precision", "32-true"),
        callbacks=[
            pl.callbacks.ModelCheckpoint(
                dirpath=out_dir / "checkpoints",
                save_last=True,
                save_top_k=0,
                every_n_train_steps=every,
            ),
            best,
        ],
        logger=pl.loggers.CSVLogger(out_dir, name="logs"),
        enable_progress_bar=bool(train_cfg.get("progress_bar", False)),
        enable_model_summary=False,
        log_every_n_steps=int(train_cfg.get("log_every_n_steps", 50)),
        val_check_interval=min(val_every, steps_per_epoch) if val_every else None,
        check_val_every_n_epoch=None if val_every and val_every > steps_per_epoch else 1,
        gradient_clip_val=float(train_cfg.get("gradient_clip", 1.0)),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        fast_dev_run=train_cfg.get("fast_dev_run", False),
        limit_train_batches=train_cfg.get("limit_train_batches"),
        limit_val_batches=train_cfg.get("limit_val_batches"),
    )
    prompt_loss = bool(data_cfg.get("prompt_loss", False))
    if prompt_loss and kind != "crystal":
        raise ValueError("data.prompt_loss needs crystal data (molecule prompts are empty)")
    train_loader = _loader(
        train_set, batch_size, tokenizer, shuffle=True, seed=seed, prompt_loss=prompt_loss
    )
    val_loader = _loader(
        val_set,
        int(data_cfg.get("val_batch_size", 2 * batch_size)),
        tokenizer,
        shuffle=False,
        seed=seed,
        prompt_loss=prompt_loss,
    )
    last = out_dir / "checkpoints" / "last.ckpt"
    n_params = count_parameters(model)
    log(
        f"training a {n_params:,}-parameter {type(model).__name__} on {len(train_set)} "
        f"{kind} examples ({form}, {int(train_set.lengths.sum()):,} tokens per epoch, "
        f"{steps_per_epoch} batches of {batch_size}); validating on {len(val_set)}"
        + (f"; resuming from {last}" if last.is_file() else "")
    )
    fit_start = time.perf_counter()
    trainer.fit(
        module,
        train_loader,
        val_loader,
        ckpt_path=str(last) if last.is_file() else None,
        weights_only=True,  # resuming never unpickles code
    )
    fit_seconds = time.perf_counter() - fit_start
    if not train_cfg.get("fast_dev_run"):
        trainer.save_checkpoint(last, weights_only=False)  # a rerun resumes exactly here
    if not train_cfg.get("fast_dev_run"):
        trainer.validate(module, val_loader, verbose=False)  # the final weights get a say too
    if best_dir.is_dir() and not train_cfg.get("fast_dev_run"):
        from matgen.generators.lm.checkpoint import load_text_lm

        exported = load_text_lm(best_dir).model
        chosen = {"selected": "best validation loss", "val_loss": best.best, "step": best.best_step}
    else:
        exported = module.export_model()
        chosen = {"selected": "last weights", "step": int(trainer.global_step)}
    metadata = {
        "architecture": type(exported).__name__,
        "model": described,
        "prompt_loss": prompt_loss,
        "site_order": getattr(sources["train"], "site_order", None),  # crystals only
        "training_config": config,
        "training_data": _provenance(data_cfg),
        **{k: v for k, v in info.items() if k != "elements"},
        "parameters": count_parameters(exported),
        "tokens_per_epoch": int(train_set.lengths.sum()),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "export": chosen,
        "fit_seconds": round(fit_seconds, 1),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "device": str(trainer.strategy.root_device),
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
    }
    target = Path(out_cfg.get("model_dir", out_dir / "model"))
    save_text_lm(exported, tokenizer, target, **card_fields, metadata=metadata)
    log(f"wrote {target} ({chosen['selected']}, step {chosen['step']})")
    return target


def _body_lengths(dataset: TokenizedExamples, tokenizer: Any) -> np.ndarray:
    """Tokens after ``<gen>`` per example (body + ``<eos>``)."""
    gen = tokenizer.convert_tokens_to_ids("<gen>")
    positions = np.flatnonzero(dataset.ids == gen)
    starts = dataset.offsets[:-1]
    first = positions[np.searchsorted(positions, starts)]
    return dataset.offsets[1:] - first - 1


def _provenance(data_cfg: dict[str, Any]) -> dict[str, Any]:
    from matgen.data.catalog import get_spec

    out: dict[str, Any] = {}
    for part in ("train", "val"):
        if part not in data_cfg:
            continue
        out[part] = []
        for source in data_cfg[part]:
            spec = get_spec(source["dataset"]).file(source["split"])
            out[part].append(
                {**source, "file": spec.path, "sha256": spec.sha256, "rows": spec.rows}
            )
    for key in ("val_fraction", "max_train", "max_val"):
        if key in data_cfg:
            out[key] = data_cfg[key]
    return out


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
