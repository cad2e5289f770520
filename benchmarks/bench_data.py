"""Data-layer throughput on all of MP-20 we have (38,413 structures), against pymatgen.

Measures, in one run on one machine:
  1. loading the three MP-20 splits (cold: parse every CIF in parallel; warm: the processed cache),
  2. converting them to AtomsBatch objects (chunks of 256 structures),
  3. neighbor lists at 6 Å for every structure through AtomsBatch.with_neighbors (the batched
     kernel, batches of 256),
  4. on a random sample: pymatgen's Structure.get_neighbor_list one structure at a time, matgen's
     batched kernel (batches of 256) and vesin one structure at a time, printing structures/s and
     the speed-ups over pymatgen (the goal is >= 5x).

Usage: python benchmarks/bench_data.py [--cold] [--sample 2000] [--cutoff 6.0] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="parse every CIF (empty cache) instead of reading the cache",
    )
    parser.add_argument(
        "--sample", type=int, default=2000, help="structures timed with pymatgen (0: all)"
    )
    parser.add_argument("--cutoff", type=float, default=6.0)
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for matgen (pymatgen uses one)"
    )
    args = parser.parse_args()
    if args.cold:
        os.environ["MATGEN_CACHE"] = tempfile.mkdtemp(prefix="matgen-bench-")

    import torch

    from matgen.data import AtomsBatch, load_dataset
    from matgen.data.neighbors import neighbor_list

    torch.set_num_threads(args.threads)
    print(
        f"cores: {os.cpu_count()}, matgen threads: {args.threads}, cutoff {args.cutoff} Å, "
        f"cache: {'cold' if args.cold else 'warm'}"
    )
    start = time.perf_counter()
    splits = load_dataset("mp_20", progress=False)
    load_s = time.perf_counter() - start
    collections = [d.collection for d in splits.values()]
    n = sum(len(c) for c in collections)
    print(f"load      {n:6d} structures in {load_s:7.2f} s  {n / load_s:10.0f} structures/s")

    start = time.perf_counter()
    batches = [
        AtomsBatch.from_collection(c, range(i, min(i + 256, len(c))))
        for c in collections
        for i in range(0, len(c), 256)
    ]
    convert_s = time.perf_counter() - start
    print(f"batch     {n:6d} structures in {convert_s:7.2f} s  {n / convert_s:10.0f} structures/s")

    batches[0].with_neighbors(args.cutoff)  # compiles the kernel (once per machine: cached)
    start = time.perf_counter()
    edges = sum(b.with_neighbors(args.cutoff).num_edges for b in batches)
    nl_s = time.perf_counter() - start
    print(
        f"neighbors {n:6d} structures in {nl_s:7.2f} s  {n / nl_s:10.0f} structures/s ({edges:,} edges)"
    )
    total = load_s + convert_s + nl_s
    print(f"total     load + batch + neighbors: {total:.2f} s, {n / total:.0f} structures/s")

    rng = np.random.default_rng(0)
    pool = [(c, i) for c in collections for i in range(len(c))]
    pick = rng.choice(
        len(pool), len(pool) if args.sample <= 0 else min(args.sample, len(pool)), replace=False
    )
    sample = [pool[k] for k in pick]
    structures = [c.structure(i) for c, i in sample]
    arrays = [c.arrays(i) for c, i in sample]

    sample_batches = [
        AtomsBatch.from_structures(structures[i : i + 256]) for i in range(0, len(structures), 256)
    ]
    start = time.perf_counter()
    ours_edges = sum(b.with_neighbors(args.cutoff).num_edges for b in sample_batches)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    vesin_edges = sum(
        neighbor_list(p, cell, pbc, args.cutoff)[0].shape[1] for _, p, cell, pbc in arrays
    )
    vesin_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs_edges = sum(
        len(s.get_neighbor_list(args.cutoff, exclude_self=True)[0]) for s in structures
    )
    theirs_s = time.perf_counter() - start
    m = len(sample)
    print(f"sample of {m} structures, neighbor lists at {args.cutoff} Å:")
    for label, seconds, n_edges in [
        ("matgen (batched kernel)", ours_s, ours_edges),
        ("vesin, one at a time", vesin_s, vesin_edges),
        ("pymatgen get_neighbor_list", theirs_s, theirs_edges),
    ]:
        print(
            f"  {label:28s}{seconds:7.2f} s  {m / seconds:10.0f} structures/s  ({n_edges:,} edges)"
        )
    print(f"  speed-up over pymatgen: matgen {theirs_s / ours_s:.1f}x (goal >= 5x), ", end="")
    print(f"vesin {theirs_s / vesin_s:.1f}x")


if __name__ == "__main__":
    main()
