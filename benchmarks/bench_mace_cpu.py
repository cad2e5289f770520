"""MACE energy + forces + stress on a CPU: compiled kernels against eager PyTorch operations.

In evaluation mode on a CPU, matgen's MACE runs the channel-wise convolution, the symmetric
contraction and the element-dependent skip connections as compiled kernels (numba), and reads
the radial MLPs' weights from a table of the edge length; in training mode the same model runs
eager PyTorch operations and the MLPs (the path that training differentiates twice). Both give
the same numbers (the table to 1e-10 of each weight). This script times them on the first
``--n`` MP-20 test structures, at several batch sizes, in ms per structure (model call only: the
batches and their neighbour lists are built beforehand): eager, compiled with the radial MLPs
(``tabulate_radial = False``), and compiled with the table; the ratios are eager over compiled
and the table's gain. The three take turns in each of ``--repeats`` rounds; each one's best
round counts.

Potential: a seeded random ``cpu-small`` MACE over MACE-MP-0's 89 elements, as in
``bench_relax.py``, or ``--potential`` (a shipped name or a checkpoint).

Usage: python benchmarks/bench_mace_cpu.py [--n 96] [--batches 1 8 96] [--threads 1]
       [--dtypes float64 float32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch


def _best_times(models: list, batches: list, repeats: int) -> list[float]:
    """Best of ``repeats`` passes over ``batches`` per model, seconds; the models take turns
    within each round, so that a machine whose speed drifts affects them alike."""
    for model in models:
        for batch in batches[:2]:
            model(batch)
    best = [float("inf")] * len(models)
    for _ in range(repeats):
        for k, model in enumerate(models):
            start = time.perf_counter()
            for batch in batches:
                model(batch)
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 96])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--potential", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from matgen.data import AtomsBatch, load_dataset
    from matgen.mlff.checkpoint import load_model
    from matgen.mlff.config import MP_ELEMENTS, preset
    from matgen.mlff.mace import MACE

    data = load_dataset("mp_20", "test", progress=False)
    structures = [data.atoms(i) for i in range(args.n)]
    if args.potential:
        base = load_model(args.potential)
    else:
        torch.manual_seed(0)
        base = MACE(preset("cpu-small", elements=MP_ELEMENTS, avg_num_neighbors=30.0))
    print(
        f"{args.n} MP-20 test structures ({sum(len(a) for a in structures)} atoms), "
        f"{args.potential or 'random cpu-small (89 elements)'}, {args.threads} threads; "
        "ms per structure, energy + forces + stress"
    )
    print(
        f"{'dtype':8s}{'batch':>6s}{'eager':>10s}{'comp. MLP':>11s}{'comp. table':>13s}"
        f"{'ratio':>8s}{'table gain':>12s}"
    )
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        compiled = copy.deepcopy(base).to(dtype).eval()
        untabled = copy.deepcopy(compiled)
        untabled.tabulate_radial = False
        eager = copy.deepcopy(base).to(dtype).train()
        for size in args.batches:
            batches = [
                compiled.prepare(AtomsBatch.from_atoms(structures[k : k + size], dtype=dtype))
                for k in range(0, args.n, size)
            ]
            t_eager, t_mlp, t_compiled = (
                t / args.n * 1e3
                for t in _best_times([eager, untabled, compiled], batches, args.repeats)
            )
            print(
                f"{dtype_name:8s}{size:6d}{t_eager:10.2f}{t_mlp:11.2f}{t_compiled:13.2f}"
                f"{t_eager / t_compiled:7.2f}x{t_mlp / t_compiled:11.2f}x"
            )
        table = compiled._radial_table[1] if compiled._radial_table else None
        if table is None:
            print(f"{dtype_name:8s}no radial table (over its memory cap, or not finite)")
            continue
        diffs = []
        for batch in batches:
            a, b = compiled(batch), untabled(batch)
            diffs.append(
                [
                    float((a[k] - b[k]).abs().max() / b[k].abs().max())
                    for k in ("energy", "forces", "stress")
                ]
            )
        de, df, ds = np.max(diffs, axis=0)
        print(
            f"{dtype_name:8s}radial table: {table.cells} cells, {table.nbytes / 2**20:.1f} MiB, "
            f"measured error {table.max_error:.2g} of each weight's largest value; table - MLP, "
            f"relative to the largest value in the batch: energy {de:.2g}, forces {df:.2g}, "
            f"stress {ds:.2g}"
        )


if __name__ == "__main__":
    main()
