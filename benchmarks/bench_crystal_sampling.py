"""De novo sampling with a crystal diffusion model: crystals/s at 1,000 and at 100 steps and the
evaluation suite's numbers at each, the ratio of the two rates, and DiffCSP's published MP-20
row beside them.

    python benchmarks/bench_crystal_sampling.py --model crystal-diffusion-mp20 --n 1000
    python benchmarks/bench_crystal_sampling.py --model crystal-diffusion-mp20 --n 200 --no-coverage
    python benchmarks/bench_crystal_sampling.py --model crystal-diffusion-mp20 --steps 100 \
        --load DIR   # evaluate samples written earlier with --save DIR

Validity, COV-R / COV-P (against the data set's test split; CrystalNN + Magpie fingerprints)
and the Wasserstein distances of density and of the number of elements come from
:func:`matgen.evaluate.crystals.evaluate_crystals` with its published settings (1,000 valid
samples for the distances when there are that many).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PUBLISHED = {  # DiffCSP (Jiao et al. 2023), Table 3 (ab initio generation)
    "mp_20": {
        "struct_valid": 1.0,
        "comp_valid": 0.8325,
        "cov_recall": 0.9971,
        "cov_precision": 0.9976,
        "wdist_density": 0.350,
        "wdist_num_elems": 0.340,
    },
    "perov_5": {
        "struct_valid": 1.0,
        "comp_valid": 0.9885,
        "cov_recall": 0.9974,
        "cov_precision": 0.9893,
        "wdist_density": 0.111,
        "wdist_num_elems": 0.0128,
    },
}
KEYS = ("struct_valid", "comp_valid", "valid", "cov_recall", "cov_precision")
KEYS += ("wdist_density", "wdist_num_elems")


def main(argv: list[str] | None = None) -> int:
    from matgen.evaluate.crystals import CrystalEvalSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="shipped model name or checkpoint")
    parser.add_argument("--dataset", default="mp_20", help="test split for coverage")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--step-lr", type=float, default=1e-5)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-coverage", action="store_true", help="validity and rates only")
    parser.add_argument("--save", type=Path, help="write each run's samples to DIR/STEPS.extxyz")
    parser.add_argument(
        "--load",
        type=Path,
        help="evaluate DIR/STEPS.extxyz (written by --save) instead of sampling",
    )
    parser.add_argument("--workers", type=int, help="evaluation processes (default: all CPUs)")
    parser.add_argument(
        "--fingerprint-timeout",
        type=float,
        default=CrystalEvalSettings.fingerprint_timeout,
        help="seconds one sample's CrystalNN fingerprint may take (past it: invalid)",
    )
    parser.add_argument("--progress", action="store_true", help="show the evaluation's progress")
    args = parser.parse_args(argv)

    import torch

    from matgen.evaluate.crystals import evaluate_crystals
    from matgen.generators.crystal.generator import CrystalGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = CrystalEvalSettings(fingerprint_timeout=args.fingerprint_timeout)
    rates, reports = {}, {}
    for steps in args.steps:
        if args.load:
            from ase.io import read

            samples = read(args.load / f"{steps}.extxyz", index=":")
            rates[steps] = float("nan")  # not sampled in this run
            what = f"{len(samples)} saved crystals at {steps} steps"
        else:
            generator = CrystalGenerator.load(
                args.model, device=args.device, steps=steps, step_lr=args.step_lr, chunk=args.chunk
            )
            start = time.perf_counter()
            samples = generator.sample(args.n, seed=args.seed)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            rates[steps] = args.n / (time.perf_counter() - start)
            what = f"{args.n} de novo crystals at {steps} steps: {rates[steps]:.2f}/s"
            if args.save:
                from ase.io import write
                from pymatgen.io.ase import AseAtomsAdaptor

                args.save.mkdir(parents=True, exist_ok=True)
                atoms = [AseAtomsAdaptor.get_atoms(s) for s in samples]
                write(args.save / f"{steps}.extxyz", atoms)
        report = evaluate_crystals(
            samples,
            test=None if args.no_coverage else args.dataset,
            settings=settings,
            workers=args.workers,
            progress=args.progress,
        )
        reports[steps] = report.metrics
        print(f"{args.model}, {what}; {report.counts}")
    header = f"{'metric':<18}" + "".join(f"{f'{s} steps':>12}" for s in args.steps)
    published = PUBLISHED.get(args.dataset, {})
    print("\n" + header + (f"{'DiffCSP':>12}" if published else ""))
    for key in KEYS:
        if not any(reports[s].get(key) is not None for s in args.steps):
            continue
        row = f"{key:<18}" + "".join(_cell(reports[s].get(key)) for s in args.steps)
        print(row + (_cell(published.get(key)) if published else ""))
    print(f"{'crystals/s':<18}" + "".join(f"{rates[s]:>12.2f}" for s in args.steps))
    if len(args.steps) == 2:
        a, b = args.steps
        print(f"rate ratio {b} vs {a} steps: {rates[b] / rates[a]:.1f}x")
    return 0


def _cell(value: float | None) -> str:
    return f"{'-':>12}" if value is None else f"{value:>12.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
