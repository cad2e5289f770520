"""``matgen screen INPUT... --potential NAME --db results.db``: relax, place on the hull, flag
S.U.N., store and export."""

from __future__ import annotations

import argparse
import sys

DTYPES = ("float64", "float32")


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "screen",
        help="relax candidates, energy above hull, novelty, S.U.N.; results in an ASE database",
        description=(
            "Screen crystals: validity pre-filter, deduplication, batched relaxation, energy "
            "above hull, novelty, S.U.N. flags. Each result is written to the database as it "
            "finishes; a rerun skips the ids already there."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="CIF files, folders or zips of CIFs, extxyz, ASE databases, CDVAE CSVs",
    )
    p.add_argument("--db", required=True, help="results database: a file, or a postgresql:// URL")
    p.add_argument("--potential", help="shipped model name (matgen mlff models) or checkpoint")
    p.add_argument("--fmax", type=float, default=0.05, help="force threshold, eV/Å")
    p.add_argument("--max-steps", type=int, default=500, help="FIRE steps per structure")
    p.add_argument("--fixed-cell", action="store_true", help="relax positions only")
    p.add_argument("--max-atoms", type=int, default=2048, help="atoms relaxed together at most")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (one per GPU or CPU slot)")
    p.add_argument("--ray-address", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--shard-size", type=int, default=16, help="structures per Ray shard")
    p.add_argument(
        "--reference",
        default="mp_20",
        help="known crystals for novelty: a registered set (mp_20, mp_20:train,val), "
        "structure files, or none",
    )
    p.add_argument(
        "--hull",
        default="mp",
        help="hull reference: mp (built-in MP reference, the potential's own elemental "
        "energies), mlff (MP reference phases relaxed with the potential), a pymatgen "
        "ComputedEntry JSON, or none",
    )
    p.add_argument(
        "--corrections",
        choices=("none", "mp2020"),
        default="none",
        help="MP2020 energy corrections: for potentials trained on raw (uncorrected) DFT "
        "energies; none for potentials trained on corrected energies",
    )
    p.add_argument(
        "--elemental-energies",
        choices=("auto", "relaxed", "reference"),
        default="auto",
        help="elemental energies of candidates on the mp hull: relaxed (the potential's own "
        "elemental structures), reference (MP's: for potentials trained on MP-scale energies), "
        "auto (reference when the potential's data card says energy_scale: mp)",
    )
    p.add_argument("--no-hull", action="store_true", help="same as --hull none")
    p.add_argument(
        "--stability-threshold",
        type=float,
        default=0.1,
        help="largest energy above hull of a stable candidate, eV/atom",
    )
    p.add_argument(
        "--export",
        action="append",
        default=[],
        metavar="FILE",
        help="also write the store to FILE (.extxyz, .zip of CIFs, .csv, .parquet); repeatable",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_screen)


def run_screen(args: argparse.Namespace) -> int:
    from matgen.cli.table import format_table
    from matgen.screen.executors import RayExecutor, RelaxSettings
    from matgen.screen.export import export_store
    from matgen.screen.novelty import load_reference
    from matgen.screen.pipeline import ScreenSettings, screen
    from matgen.screen.store import ScreeningStore

    relax = RelaxSettings(
        fmax=args.fmax,
        max_steps=args.max_steps,
        relax_cell=not args.fixed_cell,
        max_atoms=args.max_atoms,
        device=args.device,
        dtype=args.dtype,
    )
    settings = ScreenSettings(
        relax=relax,
        stability_threshold=args.stability_threshold,
        corrections=args.corrections,
        elemental=args.elemental_energies,
    )
    store = ScreeningStore(args.db)
    if args.inputs:
        executor = "local"
        if args.executor == "ray":
            if args.potential is None:
                print("matgen: error: --executor ray needs --potential", file=sys.stderr)
                return 2
            executor = RayExecutor(
                args.potential,
                relax,
                workers=args.workers,
                address=args.ray_address,
                shard_size=args.shard_size,
            )
        report = screen(
            args.inputs,
            store,
            potential=args.potential,
            settings=settings,
            executor=executor,
            hull=None if args.no_hull or args.hull == "none" else args.hull,
            reference=load_reference(args.reference, matcher=settings.matcher),
            progress=not args.no_progress,
        )
        print(format_table(("screening", "count"), report.rows()))
    elif not args.export:
        print(
            "matgen: error: give inputs to screen, or --export to export the store", file=sys.stderr
        )
        return 2
    for path in args.export:
        n = export_store(store, path)
        print(f"wrote {n} rows to {path}")
    return 0
