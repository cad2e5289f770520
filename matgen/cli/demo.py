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
    _generator_demo(load_dataset)
    _screening_demo(test)
    return 0


def _generator_demo(load_dataset) -> None:
    """The shipped crystal generators: structure prediction of Perov-5 test compositions and de
    novo MP-20-like crystals, scored by the evaluation suite."""
    from matgen.api import available, load
    from matgen.evaluate.crystals import evaluate_crystals, evaluate_csp

    names = available()
    if "crystal-diffusion-perov5" in names:
        test = load_dataset("perov_5", "test")
        truths = [test.structure(i) for i in range(50)]
        start = time.perf_counter()
        generator = load("crystal-diffusion-perov5", steps=100)
        formulas = [t.composition.formula.replace(" ", "") for t in truths]
        predicted = generator.sample(len(truths), composition=formulas, seed=0)
        report = evaluate_csp([[p] for p in predicted], truths)
        print(
            f"\ncrystal-diffusion-perov5, structure prediction of 50 Perov-5 test crystals "
            f"(100 steps, {time.perf_counter() - start:.1f} s): match rate "
            f"{100 * report.metrics['match_rate']:.0f}%, RMSE {report.metrics['rmse']:.4f}"
        )
    if "crystal-diffusion-mp20" in names:
        start = time.perf_counter()
        samples = load("crystal-diffusion-mp20", steps=100).sample(40, seed=0)
        print(
            f"\ncrystal-diffusion-mp20: 40 de novo crystals in {time.perf_counter() - start:.1f} s "
            f"(100 steps), e.g. {', '.join(s.composition.reduced_formula for s in samples[:6])}"
        )
        print(evaluate_crystals(samples).table())


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


def _screening_demo(test, n: int = 24, out: str = "runs/demo") -> None:
    """Batched relaxation with the shipped Si potential, then ``matgen screen`` on MP-20 test
    crystals (a stand-in for a generator's output) with the shipped MP-20 potential: energies,
    the built-in MP hull, novelty against MP-20 train + val, S.U.N. flags, rows in an SQLite ASE
    database. A rerun of the demo resumes from that database instead of screening again.

    ``mace-mp20-energies`` learned MP's relaxed structures only (zero-force labels), so its
    energy surface away from them is not trustworthy: the demo takes its energies at the given
    geometries (``--max-steps 0``). Relaxation is shown with ``mace-mlearn-si``, which was
    trained on distorted cells with forces and stresses.
    """
    from pathlib import Path

    import numpy as np
    from ase.build import bulk
    from ase.io import write

    from matgen.cli import main
    from matgen.mlff.checkpoint import load_model, shipped_models
    from matgen.relax.fire import relax_batched

    names = shipped_models()
    if "mace-mlearn-si" in names:
        rng = np.random.default_rng(0)
        cells = []
        for k in range(16):
            si = bulk("Si", "diamond", a=5.43, cubic=True).repeat((1, 1, 1 + k % 2))
            si.rattle(0.05, seed=k)
            si.set_cell(si.cell.array @ (np.eye(3) + rng.normal(0.0, 0.02, (3, 3))), True)
            cells.append(si)
        start = time.perf_counter()
        results = relax_batched(load_model("mace-mlearn-si"), cells, fmax=0.01, max_steps=500)
        per_atom = [r.energy / len(r.atoms) for r in results]
        volumes = [r.atoms.get_volume() / len(r.atoms) for r in results]
        print(
            f"\nBatched FIRE + cell filter, mace-mlearn-si, 16 rattled and strained Si cells "
            f"(8 and 16 atoms): {sum(r.converged for r in results)}/16 converged to fmax 0.01 "
            f"eV/Å in {time.perf_counter() - start:.1f} s, "
            f"{sum(int(r.steps) for r in results)} steps in all; energies "
            f"{min(per_atom):.4f} to {max(per_atom):.4f} eV/atom, volumes "
            f"{min(volumes):.2f} to {max(volumes):.2f} Å^3/atom"
        )
    if "mace-mp20-energies" not in names:
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    candidates = []
    for i in rng.choice(len(test), n, replace=False):
        atoms = test.atoms(int(i))
        atoms.calc = None
        atoms.info = {"name": test.item_id(int(i))}
        candidates.append(atoms)
    write(folder / "candidates.extxyz", candidates, format="extxyz")
    print(
        f"\nScreening {n} MP-20 test crystals with mace-mp20-energies (energies at the given "
        f"geometry), the built-in MP hull, novelty vs MP-20 train + val:"
    )
    start = time.perf_counter()
    main(
        [
            "screen",
            str(folder / "candidates.extxyz"),
            "--potential",
            "mace-mp20-energies",
            "--max-steps",
            "0",
            "--db",
            str(folder / "screen.db"),
            "--hull",
            "mp",
            "--reference",
            "mp_20:train,val",
            "--export",
            str(folder / "screen.csv"),
            "--no-progress",
        ]
    )
    print(f"screened in {time.perf_counter() - start:.0f} s; rows in {folder / 'screen.db'}")
