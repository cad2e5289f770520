"""``matgen evaluate crystals | csp | molecules | smiles``: the evaluation suite from the shell.

Each prints a readable table and, with ``--out``, writes the JSON report (every metric with the
settings that produced it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="score generated crystals or molecules")
    sub = parser.add_subparsers(dest="evaluate_command", metavar="KIND")

    p = sub.add_parser(
        "crystals", help="validity, coverage, Wasserstein, uniqueness, novelty, S.U.N."
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, help="CIF files/folders/zips, extxyz, ASE db, CDVAE CSV"
    )
    p.add_argument(
        "--test", default=None, help="registered set whose test split is the coverage reference"
    )
    p.add_argument(
        "--reference", default=None, help="registered set whose train+val is the novelty reference"
    )
    p.add_argument(
        "--dataset", default="mp_20", help="whose coverage cutoffs apply (default mp_20)"
    )
    p.add_argument(
        "--n-wdist", type=int, default=1000, help="valid samples for Wasserstein distances"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--symprec", type=float, default=None, help="fingerprint one site per symmetry orbit"
    )
    _common(p)
    p.set_defaults(run=run_crystals)

    p = sub.add_parser("csp", help="crystal structure prediction: match rate and RMSE, best of k")
    p.add_argument("predictions", type=Path, help="k predictions per truth, truth-major order")
    p.add_argument("--truth", type=Path, required=True, help="ground-truth structures")
    p.add_argument(
        "--gate",
        choices=("both", "prediction", "none"),
        default=None,
        help="validity gate (default: DiffCSP's)",
    )
    _common(p)
    p.set_defaults(run=run_csp)

    p = sub.add_parser(
        "molecules", help="EDM stability, validity, uniqueness, novelty of 3D molecules"
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, help="xyz / extxyz / ASE db of molecules with hydrogens"
    )
    p.add_argument(
        "--train", default=None, help="registered set (e.g. qm9) whose train split gives novelty"
    )
    _common(p)
    p.set_defaults(run=run_molecules)

    p = sub.add_parser(
        "smiles", help="MOSES metrics of SMILES or SELFIES: FCD, SNN, Frag, Scaf, IntDiv, novelty"
    )
    p.add_argument(
        "samples",
        type=Path,
        help="one string per line (.smi/.txt: first column) or a CSV (.csv/.csv.gz), in order",
    )
    p.add_argument(
        "--representation",
        choices=("smiles", "selfies"),
        default=None,
        help="default: selfies for a CSV column named selfies, else smiles",
    )
    p.add_argument("--column", default=None, help="CSV column (default: smiles or selfies)")
    for flag, split in (
        ("--train", "novelty"),
        ("--test", "the /Test metrics and property distances"),
        ("--test-scaffolds", "the /TestSF metrics"),
    ):
        p.add_argument(
            flag, default="moses", help=f"reference for {split}: moses, a SMILES CSV, or none"
        )
    p.add_argument(
        "--unique-k", type=int, nargs="+", default=[1000, 10000], help="k values of unique@k"
    )
    p.add_argument("--device", default="cpu", help="torch device for ChemNet and Tanimoto")
    p.add_argument("--seed", type=int, default=None, help="the generator's seed, recorded")
    _common(p)
    p.set_defaults(run=run_smiles)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")


def _finish(report, args: argparse.Namespace) -> int:
    print(report.table())
    if args.out:
        report.to_json(args.out)
        print(f"report written to {args.out}")
    return 0


def _read(paths: list[Path]):
    from matgen.data.structure_files import read_structures

    found = read_structures(*paths)
    for bad in found.bad_items:
        print(f"skipped {bad.item}: {bad.reason}", file=sys.stderr)
    return found


def run_crystals(args: argparse.Namespace) -> int:
    from matgen.evaluate.crystals import CrystalEvalSettings, evaluate_crystals

    found = _read(args.inputs)
    samples = found.structures + [None] * len(
        found.bad_items
    )  # unreadable samples count as invalid
    ids = found.ids + [b.item for b in found.bad_items]
    settings = CrystalEvalSettings(
        dataset=args.dataset,
        n_wdist_samples=args.n_wdist,
        seed=args.seed,
        fingerprint_symprec=args.symprec,
    )
    report = evaluate_crystals(
        samples,
        ids=ids,
        test=args.test,
        reference=args.reference,
        settings=settings,
        workers=args.workers,
        progress=True,
    )
    return _finish(report, args)


def run_csp(args: argparse.Namespace) -> int:
    from matgen.data.errors import DataError
    from matgen.evaluate.crystals import evaluate_csp

    predictions = _read([args.predictions]).structures
    truths = _read([args.truth]).structures
    if not truths or len(predictions) % len(truths):
        raise DataError(
            f"{len(predictions)} predictions are not k per truth for {len(truths)} truths",
            path=args.predictions,
        )
    k = len(predictions) // len(truths)
    grouped = [predictions[i * k : (i + 1) * k] for i in range(len(truths))]
    return _finish(
        evaluate_csp(grouped, truths, gate=args.gate, workers=args.workers, progress=True), args
    )


def run_molecules(args: argparse.Namespace) -> int:
    from matgen.data.configurations import read_ase_db, read_extxyz
    from matgen.evaluate.molecules3d import edm_training_smiles, evaluate_molecules_3d

    molecules, ids = [], []
    for path in args.inputs:
        collection = read_ase_db(path) if path.suffix == ".db" else read_extxyz(path)
        for i in range(len(collection)):
            numbers, positions, _, _ = collection.arrays(i)
            molecules.append((numbers, positions))
            ids.append(f"{path.name}:{i}")
    train = edm_training_smiles(args.train) if args.train else None
    report = evaluate_molecules_3d(
        molecules,
        train_smiles=train,
        ids=ids,
        reference_name=f"{args.train}/train" if args.train else None,
    )
    return _finish(report, args)


_STRING_COLUMNS = ("smiles", "SMILES", "Smiles", "selfies", "SELFIES", "Selfies")


def read_molecule_strings(path: Path, column: str | None = None) -> tuple[list[str], str]:
    """Generated strings from a file, in order, and the column they came from.

    A CSV (``.csv``, ``.csv.gz``) gives ``column`` (default: the first SMILES or SELFIES column);
    anything else is one string per line, the first whitespace-separated field, with an optional
    ``smiles``/``selfies`` header line. Blank lines and empty cells stay in as empty strings so
    that they count as invalid samples at their position.

    Raises:
        DataError: the file is missing or unreadable, or the CSV has no such column.
    """
    from matgen.data.errors import DataError
    from matgen.data.integrity import text_stream

    if not path.is_file():
        raise DataError("file of generated molecules not found", path=path)
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        import pandas as pd

        try:
            table = pd.read_csv(text_stream(path), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"not a readable CSV: {exc}", path=path) from None
        if column is None:
            column = next((c for c in _STRING_COLUMNS if c in table.columns), None)
        if column is None or column not in table.columns:
            raise DataError(
                f"no SMILES or SELFIES column; columns are {list(table.columns)} (use --column)",
                path=path,
            )
        return table[column].str.strip().tolist(), column
    lines = text_stream(path).read().splitlines()
    strings = [line.split()[0] if line.strip() else "" for line in lines]
    header = strings[0] if strings and strings[0] in _STRING_COLUMNS else None
    return (strings[1:] if header else strings), header or "first field of each line"


def run_smiles(args: argparse.Namespace) -> int:
    from matgen.evaluate.strings import evaluate_smiles

    samples, column = read_molecule_strings(args.samples, args.column)
    representation = args.representation or ("selfies" if column.lower() == "selfies" else "smiles")
    references = {
        name: None if value == "moses" else [] if value == "none" else Path(value)
        for name, value in (
            ("train", args.train),
            ("test", args.test),
            ("test_scaffolds", args.test_scaffolds),
        )
    }
    report = evaluate_smiles(
        samples,
        representation=representation,
        unique_k=args.unique_k,
        n_jobs=args.workers,
        device=args.device,
        seed=args.seed,
        **references,
    )
    report.settings["input"] = f"{args.samples} ({column})"
    return _finish(report, args)
