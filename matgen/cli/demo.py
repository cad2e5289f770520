"""``matgen demo``: the end-to-end job on the data at hand (grows as the toolkit grows)."""

from __future__ import annotations

import argparse
import time


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="run the end-to-end demonstration")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from matgen.cli.data import run_list
    from matgen.data import AtomsBatch, load_dataset

    run_list(argparse.Namespace(root=None))
    print()
    start = time.perf_counter()
    test = load_dataset("mp_20", "test")
    batch = AtomsBatch.from_collection(
        test.collection, range(256), id_column="material_id"
    ).with_neighbors(6.0)
    print(
        f"MP-20 test: {len(test):,} structures loaded in {time.perf_counter() - start:.1f} s; "
        f"first 256 batched: {batch.num_atoms:,} atoms, {batch.num_edges:,} edges within 6 Å "
        f"({batch.num_edges / batch.num_atoms:.1f} neighbors per atom)"
    )
    qm9 = load_dataset("qm9", "test")
    from rdkit import Chem

    smiles = [Chem.MolToSmiles(Chem.RemoveHs(qm9.mol(i))) for i in range(5)]
    print(
        f"QM9 test: {len(qm9):,} molecules; bonds perceived from 3D coordinates: {', '.join(smiles)}"
    )
    return 0
