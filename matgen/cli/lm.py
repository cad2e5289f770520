"""``matgen train lm CONFIG`` and the text-model side of ``matgen generate``: crystals from a
crystal language model (``generate crystal --model crystal-lm-mp20``) and molecules from a
SELFIES / SMILES model (``generate molecule``)."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "add_generate_molecule_parser",
    "add_train_parser",
    "run_generate_crystal",
    "run_generate_molecule",
    "run_train",
]


def add_train_parser(train: argparse._SubParsersAction) -> None:
    p = train.add_parser("lm", help="train a crystal or molecule language model (configs/lm)")
    p.add_argument("config", type=Path)
    p.add_argument("--max-epochs", type=int, help="override training.max_epochs")
    p.add_argument("--max-time", help="override training.max_time (DD:HH:MM:SS)")
    p.add_argument("--max-train", type=int, help="override data.max_train (a seeded subsample)")
    p.add_argument("--output", type=Path, help="override output.dir (a rerun resumes from it)")
    p.add_argument("--model-dir", type=Path, help="override output.model_dir")
    p.set_defaults(run=run_train)


def add_generate_molecule_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("molecule", help="molecules from a SELFIES / SMILES language model")
    p.add_argument("--model", required=True, help="shipped text model name or model directory")
    p.add_argument("-n", type=int, default=1000, help="number of molecules")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=256, help="molecules per sampling batch")
    p.add_argument("--out", type=Path, required=True, help="CSV file; an SDF is written beside it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_generate_molecule)


def run_train(args: argparse.Namespace) -> int:
    from matgen.training.lm_train import load_config, train_text_lm

    config = load_config(args.config)
    if args.max_epochs is not None:
        config["training"]["max_epochs"] = args.max_epochs
    if args.max_time is not None:
        config["training"]["max_time"] = args.max_time
    if args.max_train is not None:
        config["data"]["max_train"] = args.max_train
    if args.output is not None:
        config["output"]["dir"] = str(args.output)
    if args.model_dir is not None:
        config["output"]["model_dir"] = str(args.model_dir)
    train_text_lm(config)
    return 0


def _error(message: Any) -> int:
    print(f"matgen: error: {message}", file=sys.stderr)
    return 1


def run_generate_crystal(args: argparse.Namespace, properties: dict[str, float]) -> int:
    """``matgen generate crystal`` for a text model: the same extxyz + CIF zip outputs as the
    diffusion generator."""
    from matgen.cli.generate import write_crystal_chunks
    from matgen.generators.lm.generator import TextCrystalGenerator

    unsupported = [
        flag
        for flag, value in (
            ("--n-atoms", args.n_atoms),
            ("--chemsys", args.chemsys),
            ("--steps", args.steps),
        )
        if value is not None
    ]
    if args.guidance:
        unsupported.append("--guidance")
    if unsupported:
        return _error(f"{', '.join(unsupported)} do not apply to a text model")
    try:
        generator = TextCrystalGenerator.load(args.model, device=args.device, chunk=args.chunk)
        chunks = generator.iter_samples(  # checks the request before sampling
            args.n,
            composition=args.composition,
            spacegroup=args.spacegroup,
            properties=properties or None,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            enforce_validity=args.enforce_validity,
            formula_first=False if args.body_only else None,
        )
    except ValueError as exc:
        return _error(exc)
    code = write_crystal_chunks(chunks, args)
    failures = generator.report.failures
    if failures:
        print(
            f"{len(failures)} of {args.n} sampled texts did not decode "
            f"(first: sample {failures[0].index}: {failures[0].reason})"
        )
    return code


def run_generate_molecule(args: argparse.Namespace) -> int:
    """Write molecules chunk by chunk: a CSV row per sample (``index, smiles, text, valid,
    error``; failed decodes included) and an SDF of the valid ones beside it."""
    from rdkit import Chem
    from tqdm import tqdm

    from matgen.generators.lm.generator import TextMoleculeGenerator

    try:
        generator = TextMoleculeGenerator.load(args.model, device=args.device, chunk=args.chunk)
        chunks = generator.iter_samples(
            args.n, temperature=args.temperature, top_p=args.top_p, seed=args.seed
        )
    except (ValueError, FileNotFoundError) as exc:
        return _error(exc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sdf_path = args.out.with_suffix(".sdf")
    start, index, valid = time.perf_counter(), 0, 0
    bar = tqdm(total=args.n, unit="mol", disable=args.no_progress, file=sys.stderr)
    with args.out.open("w", newline="") as table, sdf_path.open("w") as sdf_handle:
        rows = csv.writer(table)
        rows.writerow(["index", "smiles", "text", "valid", "error"])
        sdf = Chem.SDWriter(sdf_handle)
        seen_failures = 0
        try:
            for chunk in chunks:
                failures = generator.report.failures[seen_failures:]
                seen_failures = len(generator.report.failures)
                failed = {f.index: f for f in failures}
                mols = iter(chunk)
                for _ in range(len(chunk) + len(failures)):
                    if index in failed:
                        rows.writerow([index, "", failed[index].text, False, failed[index].reason])
                    else:
                        mol = next(mols)
                        smiles = Chem.MolToSmiles(mol)
                        mol.SetProp("_Name", f"sample_{index:06d}")
                        mol.SetProp("smiles", smiles)
                        sdf.write(mol)
                        rows.writerow([index, smiles, mol.GetProp("text"), True, ""])
                        valid += 1
                    index += 1
                table.flush()
                sdf.flush()
                sdf_handle.flush()
                bar.update(len(chunk) + len(failures))
        finally:
            sdf.close()
            bar.close()
    seconds = time.perf_counter() - start
    print(
        f"wrote {index} molecules ({valid} valid) to {args.out} and {sdf_path} in {seconds:.1f} s "
        f"({index / seconds:.1f} molecules/s)"
    )
    if generator.report.truncated:
        print(
            f"{len(generator.report.truncated)} SELFIES bodies reached the token budget without "
            "<eos> and were decoded as they stood"
        )
    return 0
