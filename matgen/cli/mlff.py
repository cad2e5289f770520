"""``matgen train mlff CONFIG`` and ``matgen mlff eval | import-mace | models``: the force field."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DTYPES = ("float64", "float32")


def add_train_parser(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """``matgen train mlff``; returns the ``train`` sub-commands for the other models."""
    parser = commands.add_parser("train", help="train a model from a YAML config")
    sub = parser.add_subparsers(dest="train_command", metavar="MODEL")
    p = sub.add_parser("mlff", help="train the MACE force field (configs/mlff/*.yaml)")
    p.add_argument("config", type=Path)
    p.add_argument("--max-epochs", type=int, help="override training.max_epochs")
    p.add_argument("--output", type=Path, help="override output.dir")
    p.add_argument("--checkpoint", type=Path, help="override output.checkpoint")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="export and test the EMA weights of the run's last checkpoint without training",
    )
    p.set_defaults(run=run_train)
    return sub


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("mlff", help="evaluate, import and list force-field models")
    sub = parser.add_subparsers(dest="mlff_command", metavar="ACTION")
    p = sub.add_parser("eval", help="MAE / RMSE of energy, forces and stress on labelled data")
    p.add_argument("checkpoint", help="shipped model name or checkpoint file")
    p.add_argument("data", help="NAME:SPLIT of a registered set, or an extxyz / ASE db file")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(run=run_eval)
    p = sub.add_parser("models", help="the checkpoints that ship with matgen")
    p.set_defaults(run=run_models)
    p = sub.add_parser(
        "import-mace",
        help="turn a mace-torch export (matgen/mlff/mace_export.py) into a matgen checkpoint",
    )
    p.add_argument("export", type=Path, help="file written by mace_export.py")
    p.add_argument("output", type=Path, help="matgen checkpoint to write")
    p.set_defaults(run=run_import)


def run_train(args: argparse.Namespace) -> int:
    from matgen.training.mlff_train import export_run, load_config, train_mlff

    config = load_config(args.config)
    if args.max_epochs is not None:
        config["training"]["max_epochs"] = args.max_epochs
    if args.output is not None:
        config["output"]["dir"] = str(args.output)
    if args.checkpoint is not None:
        config["output"]["checkpoint"] = str(args.checkpoint)
    if args.export_only:
        export_run(config)
    else:
        train_mlff(config)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from matgen.mlff.checkpoint import load_model
    from matgen.mlff.evaluation import evaluate_potential, format_errors
    from matgen.mlff.statistics import load_configurations

    dtype = getattr(torch, args.dtype)
    model = load_model(args.checkpoint, device=args.device, dtype=dtype)
    source: dict | str = args.data
    keys = {"energy": args.energy_key, "forces": args.forces_key, "stress": args.stress_key}
    if Path(args.data).exists():
        source = {"path": args.data, "keys": keys}
    elif ":" in args.data:
        name, split = args.data.split(":", 1)
        source = {"dataset": name, "split": split, "keys": keys}
    dataset = load_configurations(source)
    report = evaluate_potential(
        model, dataset, batch_size=args.batch_size, device=args.device, dtype=dtype
    )
    report["checkpoint"] = str(args.checkpoint)
    report["data"] = args.data
    print(format_errors(report, title=f"{args.checkpoint} on {args.data}"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def run_models(args: argparse.Namespace) -> int:
    from matgen.mlff.checkpoint import MODELS_DIR, shipped_models

    for name in shipped_models():
        card = MODELS_DIR / f"{name}.json"
        info = json.loads(card.read_text()) if card.is_file() else {}
        print(f"{name}: trained on {info.get('training_data', '?')}")
        for test, metrics in info.get("test_metrics", {}).items():
            parts = [
                f"{key} MAE {metrics[key]['mae']:.2f} {metrics[key]['unit']}"
                for key in ("energy", "forces", "stress")
                if key in metrics
            ]
            print(f"    {test}: " + ", ".join(parts))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from matgen.mlff.mace_import import import_mace_export

    path = import_mace_export(args.export, args.output)
    print(f"wrote {path}")
    return 0
