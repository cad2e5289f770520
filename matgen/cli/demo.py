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

    from matgen.evaluate.crystals import evaluate_crystals
    from matgen.evaluate.molecules3d import evaluate_molecules_3d

    print("\nEDM metrics of 2,000 QM9 test molecules (the data itself):")
    molecules = [qm9.collection.arrays(i)[:2] for i in range(2000)]
    print(evaluate_molecules_3d(molecules).table())
    print("\nCrystal metrics of 200 MP-20 test crystals, 100 of them the novelty reference:")
    structures = [test.structure(i) for i in range(200)]
    print(evaluate_crystals(structures, reference=structures[:100]).table())
    _force_field_demo(load_dataset)
    return 0


def _force_field_demo(load_dataset) -> None:
    """The shipped force fields on held-out data, and one ASE calculation."""
    from ase.build import bulk

    from matgen.integrations.ase import MatgenCalculator
    from matgen.mlff.checkpoint import load_model, shipped_models
    from matgen.mlff.evaluation import evaluate_potential, format_errors

    names = shipped_models()
    if "mace-ethanol-rmd17" in names:
        test = load_dataset("ethanol", "test_MD")
        test.collection = test.collection.subset(range(200))
        report = evaluate_potential(load_model("mace-ethanol-rmd17"), test)
        print("\n" + format_errors(report, title="mace-ethanol-rmd17 on 200 rMD17 test_MD frames:"))
    if "mace-mlearn-si" in names:
        si = bulk("Si", "diamond", a=5.43)
        si.calc = MatgenCalculator.from_checkpoint("mace-mlearn-si")
        print(
            f"\nmace-mlearn-si, diamond Si (a = 5.43 Å): {si.get_potential_energy() / 2:.4f} eV/atom, "
            f"stress {si.get_stress()[:3].round(5).tolist()} eV/Å^3"
        )
