"""``matgen data list | info NAME | fetch NAME --from SOURCE``: the data-set registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from matgen.cli.table import format_table, human_size


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("data", help="list, inspect and fetch the registered data sets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    p = sub.add_parser("list", help="every registered data set: splits, rows, presence, size")
    p.add_argument("--root", type=Path, help="data root (default: $MATGEN_DATA or ../shared/data)")
    p.set_defaults(run=run_list)
    p = sub.add_parser("info", help="one data set: files, checksums, rows, sources")
    p.add_argument("name")
    p.add_argument("--root", type=Path)
    p.add_argument("--count", action="store_true", help="load every split and count its rows")
    p.set_defaults(run=run_info)
    p = sub.add_parser("fetch", help="copy or download a data set from a mirror of the data root")
    p.add_argument("name")
    p.add_argument("--from", dest="source", required=True, help="base URL or local directory")
    p.add_argument("--root", type=Path, help="destination data root")
    p.set_defaults(run=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    from matgen.data.catalog import CATALOG
    from matgen.data.root import data_root

    root = args.root or data_root()
    rows = []
    for spec in CATALOG:
        paths = {f.path: f.size for f in (*spec.files, *spec.extra)}
        present = sum((root / p).is_file() for p in paths)
        splits = ", ".join(f"{f.split} {f.rows:,}" for f in spec.files[:3])
        if len(spec.files) > 3:
            splits += f", +{len(spec.files) - 3} more (`matgen data info {spec.name}`)"
        state = "yes" if present == len(paths) else f"{present}/{len(paths)} files"
        rows.append((spec.name, spec.format, splits, state, human_size(sum(paths.values()))))
    print(f"data root: {root}")
    print(format_table(("name", "format", "splits (rows)", "present", "size"), rows))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from matgen.data.catalog import get_spec
    from matgen.data.errors import DataError
    from matgen.data.integrity import verify_file
    from matgen.data.root import data_root

    spec = get_spec(args.name)
    root = args.root or data_root()
    print(f"{spec.name}: {spec.description}")
    print(f"format: {spec.format}    data root: {root}")
    counts = {}
    if args.count:
        from matgen.data.datasets import load_dataset

        loaded = load_dataset(spec.name, root=root, progress=True)
        counts = {split: len(value) for split, value in loaded.items()}
    rows, missing = [], 0
    for f in (*spec.files, *spec.extra):
        path = root / f.path
        try:
            verify_file(path, f.sha256, size=f.size)
            state = "ok"
        except DataError as exc:
            state = "missing" if not path.is_file() else "CORRUPT"
            missing += 1
            if path.is_file():
                print(f"  {exc}")
        rows.append(
            (f.split, f.path, f"{f.rows:,}", *((f"{counts[f.split]:,}",) if counts else ()),
             human_size(f.size), state, f.sha256[:16])
        )  # fmt: skip
    header = (
        "split",
        "path",
        "rows",
        *(("counted",) if counts else ()),
        "size",
        "state",
        "sha256[:16]",
    )
    print(format_table(header, rows))
    print("sources (upstream originals):")
    for f in (*spec.files, *spec.extra):
        print(f"  {f.split}: {f.source}")
    return 1 if missing else 0


def run_fetch(args: argparse.Namespace) -> int:
    from matgen.data.fetch import fetch_dataset

    for path in fetch_dataset(args.name, args.source, root=args.root):
        print(f"ok  {path}")
    return 0
