"""Data-layer throughput on all of MP-20 we have (38,413 structures), against pymatgen.

Measures, in one run on one machine:
  1. loading the three MP-20 splits (cold: parse every CIF in parallel; warm: the processed cache),
  2. converting them to AtomsBatch objects (chunks of 256 structures),
  3. neighbor lists at 6 Å for every structure through AtomsBatch.with_neighbors (vesin),
  4. pymatgen's Structure.get_neighbor_list at 6 Å on a random sample, and matgen on the same
     sample, printing structures/s and the speed-up (the goal is >= 5x).

Usage: python benchmarks/bench_data.py [--cold] [--sample 2000] [--cutoff 6.0]
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
    args = parser.parse_args()
    if args.cold:
        os.environ["MATGEN_CACHE"] = tempfile.mkdtemp(prefix="matgen-bench-")

    from matgen.data import AtomsBatch, load_dataset
    from matgen.data.neighbors import neighbor_list

    print(
        f"cores: {os.cpu_count()}, cutoff {args.cutoff} Å, cache: {'cold' if args.cold else 'warm'}"
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

    start = time.perf_counter()
    ours_edges = sum(
        neighbor_list(p, cell, pbc, args.cutoff)[0].shape[1] for _, p, cell, pbc in arrays
    )
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs_edges = sum(
        len(s.get_neighbor_list(args.cutoff, exclude_self=True)[0]) for s in structures
    )
    theirs_s = time.perf_counter() - start
    m = len(sample)
    print(f"sample of {m} structures, neighbor lists at {args.cutoff} Å:")
    print(
        f"  matgen (vesin)              {ours_s:7.2f} s  {m / ours_s:10.0f} structures/s  ({ours_edges:,} edges)"
    )
    print(
        f"  pymatgen get_neighbor_list  {theirs_s:7.2f} s  {m / theirs_s:10.0f} structures/s  ({theirs_edges:,} edges)"
    )
    print(f"  speed-up: {theirs_s / ours_s:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
