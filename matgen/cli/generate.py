"""``matgen generate crystal`` and ``matgen train crystal-diffusion``: the crystal generator.

``--model`` may also name a text model (:mod:`matgen.generators.lm`): the command then routes
to :mod:`matgen.cli.lm`, which also adds ``generate molecule`` and ``train lm``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def add_train_parser(train: argparse._SubParsersAction) -> None:
    p = train.add_parser(
        "crystal-diffusion", help="train the crystal diffusion model (configs/crystal_diffusion)"
    )
    p.add_argument("config", type=Path)
    p.add_argument("--max-epochs", type=int, help="override training.max_epochs")
    p.add_argument("--max-time", help="override training.max_time (DD:HH:MM:SS)")
    p.add_argument("--output", type=Path, help="override output.dir")
    p.add_argument("--checkpoint", type=Path, help="override output.checkpoint")
    p.add_argument(
        "--prepare",
        type=Path,
        metavar="DIR",
        help="only write the Niggli-reduced data as .npz under DIR and a config using them "
        "(for a training machine without pymatgen)",
    )
    p.set_defaults(run=run_train)


def add_parser(commands: argparse._SubParsersAction) -> None:
    from matgen.cli import lm as lm_cmd

    parser = commands.add_parser("generate", help="sample crystals or molecules from a generator")
    sub = parser.add_subparsers(dest="generate_command", metavar="KIND")
    p = sub.add_parser("crystal", help="crystals from a crystal diffusion or text model")
    p.add_argument("--model", required=True, help="shipped model name or checkpoint file")
    p.add_argument("-n", type=int, default=100, help="number of crystals")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--composition", help="structure prediction for this formula, e.g. SrTiO3")
    what.add_argument("--n-atoms", type=int, help="atoms per crystal (de novo)")
    p.add_argument("--chemsys", help="de novo within a chemical system, e.g. Li-Fe-O")
    p.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="target of a property the model is conditioned on, e.g. band_gap=1.5; repeatable",
    )
    p.add_argument("--spacegroup", type=int, help="space group number 1..230 (text models)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (text)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (text models)")
    p.add_argument(
        "--enforce-validity",
        action="store_true",
        help="text models: the grammar also enforces charge neutrality and a 0.5 Å minimum "
        "distance between sites",
    )
    p.add_argument(
        "--body-only",
        action="store_true",
        help="text models trained with prompt_loss: free sampling without the formula-first "
        "stage (the model writes the structure directly)",
    )
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance w")
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's T)")
    p.add_argument("--step-lr", type=float, default=1e-5, help="Langevin corrector step; 0: off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=256, help="crystals per sampling batch")
    p.add_argument("--out", type=Path, required=True, help="extxyz file; a CIF zip beside it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_generate)
    lm_cmd.add_generate_molecule_parser(sub)


def run_train(args: argparse.Namespace) -> int:
    import yaml

    from matgen.training.crystal_diffusion_train import (
        load_config,
        prepare_sources,
        train_crystal_diffusion,
    )

    config = load_config(args.config)
    if args.prepare is not None:
        prepared = prepare_sources(config, args.prepare)
        target = args.prepare / args.config.name
        target.write_text(yaml.safe_dump(prepared, sort_keys=False))
        print(f"wrote the prepared data and {target}")
        return 0
    if args.max_epochs is not None:
        config["training"]["max_epochs"] = args.max_epochs
    if args.max_time is not None:
        config["training"]["max_time"] = args.max_time
    if args.output is not None:
        config["output"]["dir"] = str(args.output)
    if args.checkpoint is not None:
        config["output"]["checkpoint"] = str(args.checkpoint)
    train_crystal_diffusion(config)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from matgen.generators.crystal.generator import CrystalGenerator
    from matgen.generators.lm.checkpoint import is_text_model

    properties = {}
    for item in args.property:
        name, sep, value = item.partition("=")
        try:
            properties[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            print(f"matgen: error: --property {item!r}: use NAME=VALUE", file=sys.stderr)
            return 1
    if is_text_model(args.model):
        from matgen.cli.lm import run_generate_crystal

        return run_generate_crystal(args, properties)
    for flag, given in (
        ("--spacegroup", args.spacegroup is not None),
        ("--enforce-validity", args.enforce_validity),
        ("--body-only", args.body_only),
    ):
        if given:
            print(f"matgen: error: {flag} needs a text model", file=sys.stderr)
            return 1
    generator = CrystalGenerator.load(
        args.model, device=args.device, steps=args.steps, step_lr=args.step_lr, chunk=args.chunk
    )
    chunks = generator.iter_samples(  # checks the request on the first chunk, before sampling
        args.n,
        composition=args.composition,
        n_atoms=args.n_atoms,
        chemsys=args.chemsys,
        properties=properties or None,
        guidance=args.guidance,
        seed=args.seed,
    )
    return write_crystal_chunks(chunks, args)


def write_crystal_chunks(chunks: Iterator[list], args: argparse.Namespace) -> int:
    """Append each chunk of structures to ``args.out`` (extxyz) and a CIF zip beside it, so a
    long run keeps its finished crystals; 1 when the request is refused (``ValueError``)."""
    import zipfile

    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter
    from tqdm import tqdm

    args.out.parent.mkdir(parents=True, exist_ok=True)
    zip_path = args.out.with_suffix(".cif.zip")
    for path in (args.out, zip_path):
        path.unlink(missing_ok=True)
    start, done = time.perf_counter(), 0
    bar = tqdm(total=args.n, unit="crystal", disable=args.no_progress, file=sys.stderr)
    try:
        for chunk in chunks:
            frames = []
            with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
                for structure in chunk:
                    name = f"sample_{done:06d}"
                    atoms = AseAtomsAdaptor.get_atoms(structure)
                    atoms.info = {"name": name, "model": args.model, "seed": args.seed}
                    frames.append(atoms)
                    archive.writestr(f"{name}.cif", str(CifWriter(structure)))
                    done += 1
            if frames:
                write(args.out, frames, format="extxyz", append=True)
            bar.update(len(chunk))
    except ValueError as exc:
        print(f"matgen: error: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    print(
        f"wrote {done} crystals to {args.out} and {zip_path} in {seconds:.1f} s "
        f"({done / seconds:.2f} crystals/s)"
    )
    return 0
