"""Batched relaxation against sequential ASE FIRE + FrechetCellFilter, same potential, same fmax.

Structures: the first ``--n`` MP-20 test structures, rattled by 0.05 Å and strained by 2%
(seeded). Potential: ``--potential`` (a shipped name or a checkpoint), by default a seeded random
``cpu-small`` MACE over MACE-MP-0's 89 elements (its minima are arbitrary, but both relaxers
follow the same trajectory step for step, so steps/s compare like with like). Every structure
runs until ``fmax`` or ``--max-steps``. Prints structures/s, FIRE steps/s and the ratio, in
float64 and float32. With ``--repeats R`` the two relaxers run R rounds, alternating, and each
side's best time counts.

Threads: the batched relaxer gets ``--threads`` (it evaluates parts of its batch side by side,
one thread each); ASE gets ``--ase-threads``, by default the same. One structure at a time is
fastest on one thread here (22.8-26.7 FIRE steps/s on one thread against 13.1-13.6 on two, for
the default potential on the 2-core CPU), so ``--threads 2 --ase-threads 1`` compares each side
in its best setting.

``--device cuda`` runs both relaxers on the GPU (ASE's FIRE then moves one structure's forces to
the host each step). ``--structures FILE`` reads the structures from an extxyz file instead of
the data root.

Usage: python benchmarks/bench_relax.py [--n 100] [--max-steps 60] [--fmax 0.05] [--threads 2]
       [--ase-threads 1]
       [--device cuda] [--structures FILE] [--dtypes float64 float32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def rattled_and_strained(originals: list) -> list:
    """The structures rattled by 0.05 Å and strained by 2% (seeded), in place."""
    rng = np.random.default_rng(0)
    for i, atoms in enumerate(originals):
        atoms.calc = None
        atoms.rattle(0.05, seed=i)
        strain = np.eye(3) + rng.normal(0.0, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    return originals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ase-threads", type=int, default=None, help="threads of ASE (default: --threads)"
    )
    parser.add_argument("--potential", default=None)
    parser.add_argument("--max-atoms", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--structures", default=None, help="extxyz file instead of MP-20 test")
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument(
        "--sequential-n",
        type=int,
        default=None,
        help="relax only the first K structures with ASE (its rate is per structure)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of both relaxers, alternating; each side's best time counts (a machine "
        "whose speed drifts between the two phases of one round skews a single round)",
    )
    args = parser.parse_args()
    ase_threads = args.threads if args.ase_threads is None else args.ase_threads
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from matgen.mlff.checkpoint import load_model
    from matgen.mlff.config import preset
    from matgen.mlff.mace import MACE
    from matgen.relax import relax, relax_batched

    if args.structures:
        from ase.io import read

        originals = read(args.structures, index=f":{args.n}")
    else:
        from matgen.data import load_dataset

        data = load_dataset("mp_20", "test", progress=False)
        originals = [data.atoms(i) for i in range(args.n)]
    structures = rattled_and_strained(originals)
    if args.potential:
        model = load_model(args.potential)
        name = args.potential
    else:
        torch.manual_seed(0)
        model = MACE(
            preset(
                "cpu-small",
                elements=tuple(range(1, 84)) + tuple(range(89, 95)),
                avg_num_neighbors=30.0,
                scale=2000.0,
            )
        )
        name = "random cpu-small (89 elements, scale 2000 eV: forces of about 1 eV/Å)"
    n_atoms = sum(len(a) for a in structures)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{args.threads} threads batched, {ase_threads} for ASE"
    )
    print(
        f"{len(structures)} MP-20 test structures ({n_atoms} atoms), potential {name}, "
        f"fmax {args.fmax}, max {args.max_steps} steps, {where}"
    )
    print(
        f"{'dtype':8s}{'relaxer':12s}{'time s':>9s}{'struct/s':>10s}{'steps/s':>10s}"
        f"{'converged':>11s}"
    )
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        t_batched = t_seq = float("inf")
        for _ in range(args.repeats):  # alternating rounds; the best time of each side counts
            start = time.perf_counter()
            batched = relax_batched(
                model,
                structures,
                fmax=args.fmax,
                max_steps=args.max_steps,
                max_atoms=args.max_atoms,
                device=device,
                dtype=dtype,
            )
            t_batched = min(t_batched, time.perf_counter() - start)
            torch.set_num_threads(ase_threads)
            start = time.perf_counter()
            sequential = [
                relax(
                    a, model, fmax=args.fmax, max_steps=args.max_steps, device=device, dtype=dtype
                )
                for a in structures[: args.sequential_n]
            ]
            t_seq = min(t_seq, time.perf_counter() - start)
            torch.set_num_threads(args.threads)
        rows = []
        for label, results, seconds in (
            ("ASE FIRE", sequential, t_seq),
            ("batched", batched, t_batched),
        ):
            steps = sum(r.steps for r in results)
            done = sum(r.converged for r in results)
            rows.append((label, seconds, len(results) / seconds, steps / seconds, done))
            print(
                f"{dtype_name:8s}{label:12s}{seconds:9.1f}{len(results) / seconds:10.2f}"
                f"{steps / seconds:10.1f}{done:>11d}"
            )
        pairs = list(zip(sequential, batched[: len(sequential)], strict=True))
        same = sum(a.steps == b.steps for a, b in pairs)
        de = max(
            (
                abs(a.energy - b.energy) / len(a.atoms)
                for a, b in pairs
                if a.converged and b.converged
            ),
            default=float("nan"),
        )
        print(
            f"{dtype_name:8s}ratio (structures/s): {rows[1][2] / rows[0][2]:.1f}x; same step "
            f"count {same}/{len(pairs)}; max |dE| {1000 * de:.3g} meV/atom"
        )
        model.to(device="cpu", dtype=torch.float64)


if __name__ == "__main__":
    main()
