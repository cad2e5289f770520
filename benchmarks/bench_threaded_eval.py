"""One model call on a batch of many small cells: threads inside each operation against parts of
the batch side by side (:func:`matgen.mlff.potential.evaluate_threaded`).

The batch: the first ``--n`` MP-20 test structures, rattled by 0.05 Å and strained by 2% as in
``bench_relax.py`` (energy, forces and stress; the neighbour list is built inside the call, as
in a relaxation step). Three settings take turns in each of ``--repeats`` rounds; each one's
best round counts:

- ``1 thread``: ``torch.set_num_threads(1)``, one call;
- ``T threads``: ``torch.set_num_threads(T)``, one call (PyTorch's and the kernels' threading
  inside each operation);
- ``T parts``: ``evaluate_threaded`` with ``T`` parts, one single-threaded part per thread.

Prints ms per call, the speed-ups over one thread, the ratio of parts over operation threads,
and the largest difference of the parts' forces from the single call's.

Potential: a seeded random ``cpu-small`` MACE over MACE-MP-0's 89 elements, or ``--potential``
(a shipped name or a checkpoint).

Usage: python benchmarks/bench_threaded_eval.py [--n 100] [--threads 2] [--dtypes float64 float32]
       [--repeats 6] [--potential NAME]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_relax import rattled_and_strained  # this script's folder is on the path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--potential", default=None)
    args = parser.parse_args()

    from matgen.data import load_dataset
    from matgen.data.batch import AtomsBatch
    from matgen.mlff.checkpoint import load_model
    from matgen.mlff.config import MP_ELEMENTS, preset
    from matgen.mlff.mace import MACE
    from matgen.mlff.potential import evaluate_threaded

    data = load_dataset("mp_20", "test", progress=False)
    structures = rattled_and_strained([data.atoms(i) for i in range(args.n)])
    if args.potential:
        model = load_model(args.potential)
        name = args.potential
    else:
        torch.manual_seed(0)
        model = MACE(preset("cpu-small", elements=MP_ELEMENTS, avg_num_neighbors=30.0))
        name = "random cpu-small (89 elements)"
    t = args.threads
    print(
        f"{len(structures)} MP-20 test structures ({sum(len(a) for a in structures)} atoms), "
        f"potential {name}, energy + forces + stress, ms per call"
    )
    print(
        f"{'dtype':9s}{'1 thread':>10s}{f'{t} threads':>11s}{f'{t} parts':>10s}"
        f"{'threads x':>11s}{'parts x':>9s}{'parts/threads':>15s}{'max |dF|':>11s}"
    )
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        model = model.to(dtype).eval()
        batch = AtomsBatch.from_atoms(structures, dtype=dtype)

        def one(threads: int, model=model, batch=batch):
            torch.set_num_threads(threads)
            return model(batch)

        def parts(model=model, batch=batch):
            torch.set_num_threads(t)
            return evaluate_threaded(model, batch, threads=t)

        settings = [lambda: one(1), lambda: one(t), parts]
        outs = [fn() for fn in settings]  # warm-up (kernels compiled, table built)
        best = [float("inf")] * len(settings)
        for _ in range(args.repeats):
            for k, fn in enumerate(settings):
                start = time.perf_counter()
                outs[k] = fn()
                best[k] = min(best[k], time.perf_counter() - start)
        diff = float((outs[2]["forces"] - outs[0]["forces"]).abs().max())
        ms = [1000 * b for b in best]
        print(
            f"{dtype_name:9s}{ms[0]:10.0f}{ms[1]:11.0f}{ms[2]:10.0f}{ms[0] / ms[1]:10.2f}x"
            f"{ms[0] / ms[2]:8.2f}x{ms[1] / ms[2]:14.2f}x{diff:11.1e}"
        )
    torch.set_num_threads(t)


if __name__ == "__main__":
    main()
