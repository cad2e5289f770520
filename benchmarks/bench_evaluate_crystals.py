"""Time the crystal evaluation on 10,000 MP-20-like crystals, stage by stage.

Samples: the 9,046 MP-20 test crystals plus val crystals with their atoms displaced by 0.05 Å
(seeded), 10,000 in all. Metrics: validity, COV-R/COV-P against the MP-20 test split, and
uniqueness and novelty against MP-20 train + val (29,367 crystals). Prints seconds per stage,
structures/s, and the metric values. The goal: under 10 minutes on 2 cores.

Usage: python benchmarks/bench_evaluate_crystals.py [--n 10000] [--symprec 0.001] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument(
        "--symprec",
        type=float,
        default=None,
        help="fingerprint one site per orbit (default: all sites)",
    )
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    from matgen.data import get_spec, load_dataset
    from matgen.evaluate.crystal.coverage import coverage
    from matgen.evaluate.crystal.fingerprints import crystal_fingerprints, reference_cache_path
    from matgen.evaluate.crystal.matching import uniqueness_and_novelty
    from matgen.evaluate.crystals import crystal_validity, reference_set

    stages: dict[str, float] = {}

    def timed(name, fn, *a, **k):
        start = time.perf_counter()
        out = fn(*a, **k)
        stages[name] = time.perf_counter() - start
        print(f"{name:28s} {stages[name]:8.1f} s", flush=True)
        return out

    def build_samples():
        test = load_dataset("mp_20", "test", progress=False).structures()
        val = load_dataset("mp_20", "val", progress=False)
        extra = []
        np.random.seed(0)  # noqa: NPY002 -- pymatgen's perturb draws from numpy's global generator
        for i in range(max(0, args.n - len(test))):
            s = val.structure(i)
            s.perturb(0.05)
            extra.append(s)
        return (test + extra)[: args.n]

    print(
        f"cores: {os.cpu_count()}, workers: {args.workers or os.cpu_count()}, fingerprint sites: "
        f"{'all (exact)' if args.symprec is None else f'one per orbit, symprec {args.symprec}'}"
    )
    samples = timed("load samples", build_samples)
    validity = timed("validity (structure + SMACT)", crystal_validity, samples)
    fps = timed(
        "fingerprints of samples",
        crystal_fingerprints,
        samples,
        symprec=args.symprec,
        workers=args.workers,
    )
    test_structures, _ = reference_set("mp_20", ["test"])
    cache = reference_cache_path(
        get_spec("mp_20").file("test").sha256, "test", symprec=args.symprec
    )
    label = f"test fingerprints ({'cached' if cache.is_file() else 'cold'})"
    test_fp = timed(
        label,
        crystal_fingerprints,
        test_structures,
        symprec=args.symprec,
        workers=args.workers,
        cache_path=cache,
    )
    cov = timed("coverage", coverage, fps, test_fp, structure_cutoff=0.4, composition_cutoff=10.0)
    references, _ = timed("load train + val", reference_set, "mp_20", ["train", "val"])
    valid = validity.structural & validity.compositional & fps.ok
    chosen = [s for s, v in zip(samples, valid, strict=True) if v]
    unique, novel = timed(
        "uniqueness + novelty", uniqueness_and_novelty, chosen, references, workers=args.workers
    )
    total = sum(stages.values())
    print(f"{'total':28s} {total:8.1f} s  ({len(samples) / total:.1f} structures/s; goal < 600 s)")
    print(
        f"valid {valid.mean():.4f}  COV-R {cov['cov_recall']:.4f}  COV-P {cov['cov_precision']:.4f}  "
        f"unique {unique.mean():.4f}  novel {novel.mean():.4f}  (of {len(chosen)} valid)"
    )


if __name__ == "__main__":
    main()
