"""Crystal structure prediction on a CDVAE test split with a crystal diffusion model: match rate
and RMSE (the evaluation suite's ``evaluate_csp``: StructureMatcher stol 0.5, ltol 0.3,
angle_tol 10; k = 1; DiffCSP's validity gate), crystals/s, beside DiffCSP's published row.

    python benchmarks/bench_crystal_csp.py --model crystal-diffusion-perov5 --n 500
    python benchmarks/bench_crystal_csp.py --model crystal-diffusion-perov5 --steps 100
    # score tensors sampled elsewhere (e.g. on a GPU machine without pymatgen):
    python benchmarks/bench_crystal_csp.py --model crystal-diffusion-perov5 --from-npz csp.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PUBLISHED = {  # DiffCSP (Jiao et al. 2023), Table 1, k = 1
    "perov_5": (52.02, 0.0760),
    "mp_20": (51.49, 0.0631),
    "mpts_52": (12.19, 0.1786),
    "carbon_24": (17.54, 0.2759),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="shipped model name or checkpoint")
    parser.add_argument("--dataset", default="perov_5")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, help="first n crystals of the split (default: all)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's T)")
    parser.add_argument("--step-lr", type=float, default=1e-5)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-npz", type=Path, help="sampled tensors to score instead")
    args = parser.parse_args(argv)

    import torch
    from pymatgen.core import Lattice, Structure

    from matgen.data import load_dataset
    from matgen.evaluate.crystals import evaluate_csp
    from matgen.generators.crystal.dataset import CrystalDataset, prepare_collection
    from matgen.generators.crystal.generator import CrystalGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.split, progress=False)
    n = len(data) if args.n is None else min(args.n, len(data))
    truths = [data.structure(i) for i in range(n)]
    generator = CrystalGenerator.load(args.model, device=args.device)
    model = generator.model
    if args.from_npz is not None:
        saved = np.load(args.from_npz)
        offsets = np.concatenate([[0], np.cumsum(saved["n_atoms"])])
        elements = saved["elements"]
        predictions = []
        for i in range(n):
            lo, hi = offsets[i], offsets[i + 1]
            predictions.append(
                Structure(
                    Lattice(saved["lattice"][i]),
                    elements[saved["types"][lo:hi]].tolist(),
                    saved["frac"][lo:hi],
                )
            )
        seconds = float(saved["seconds"]) * n / len(saved["n_atoms"])
        what = f"{args.from_npz} ({int(saved['steps'])} steps, step_lr {float(saved['step_lr'])})"
    else:
        collection = prepare_collection(data.collection.subset(range(n)))
        dataset = CrystalDataset(collection, model.elements, name=f"{args.dataset} {args.split}")
        rng = torch.Generator(device=args.device).manual_seed(args.seed)
        predictions, start = [], time.perf_counter()
        for lo in range(0, n, args.chunk):
            batch = dataset.batch(range(lo, min(lo + args.chunk, n))).to(args.device)
            out = model.sample_tensors(
                batch.n_atoms,
                types=batch.types,
                steps=args.steps,
                step_lr=args.step_lr,
                generator=rng,
            )
            predictions.extend(generator.to_structures(out))
        seconds = time.perf_counter() - start
        what = f"{args.steps or model.config.timesteps} steps, step_lr {args.step_lr}"
    report = evaluate_csp([[p] for p in predictions], truths)
    rate, rmse = report.metrics["match_rate"], report.metrics["rmse"]
    print(f"{args.model} on {args.dataset} {args.split} ({n} crystals, {what}):")
    print(f"  match rate {100 * rate:.2f}%  RMSE {rmse:.4f}  ({n / seconds:.2f} crystals/s)")
    if args.dataset in PUBLISHED:
        published = PUBLISHED[args.dataset]
        print(
            f"  DiffCSP (published, k=1): match rate {published[0]:.2f}%  RMSE {published[1]:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
