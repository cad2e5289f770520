"""Does a property-conditioned crystal generator move the property toward its target?

Samples de novo crystals from a conditioned crystal-diffusion model at several target values of
one scalar property, and without the condition, and measures the property of every sample with a
predictor trained in this project. For ``formation_energy_per_atom`` the predictor is a potential
trained on MP formation energies on MP's elemental scale (``mace-mp20-energies``): single-point
energies at the generated geometry, ``ΔE_f = E/N - Σ x_el μ_el`` with MP's elemental reference
energies. Structurally invalid samples (an interatomic distance under 0.5 Å or a cell volume
under 0.1 Å³) are left out of the property statistics and counted.

Prints, per target: valid samples, the median and quartiles of the predicted property, the share
of samples predicted within 0.5 eV/atom of the target, and the shift of the median from the
unconditional samples'; and the same statistics of the training data's labels. (No means: on
samples far from its training domain the predictor's errors are heavy-tailed.)

    python benchmarks/bench_property_conditioning.py --model crystal-diffusion-mp20-eform \\
        --targets -3 -1 0 --n 200 --guidance 2 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _stats(values: np.ndarray, target: float | None = None) -> str:
    """Median and quartiles (the predictor's errors on off-domain samples are heavy-tailed, so
    no means), and the share of predictions within 0.5 eV/atom of the target."""
    v = values[np.isfinite(values)]
    if not len(v):
        return f"{'-':>8} {'-':>8} {'-':>8} {'-':>8}"
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    near = f"{np.mean(np.abs(v - target) <= 0.5):8.2f}" if target is not None else f"{'':>8}"
    return f"{median:8.3f} {q1:8.3f} {q3:8.3f} {near}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="crystal-diffusion-mp20-eform")
    parser.add_argument("--property", default="formation_energy_per_atom")
    parser.add_argument("--targets", type=float, nargs="+", default=[-3.0, -1.0, 0.0])
    parser.add_argument("--n", type=int, default=200, help="samples per target")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--predictor", default="mace-mp20-energies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.property != "formation_energy_per_atom":
        parser.error("only formation_energy_per_atom has a predictor in this project")

    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    import matgen
    from matgen.data import load_dataset
    from matgen.evaluate.crystal.validity import structure_validity
    from matgen.mlff.checkpoint import load_model
    from matgen.relax.fire import relax_batched
    from matgen.screen.formation import formation_energy_per_atom
    from matgen.screen.reference import load_mp_reference

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = matgen.load(args.model, device=args.device, steps=args.steps)
    predictor = load_model(args.predictor, device=args.device, dtype=torch.float64)
    allowed = set(predictor.config.symbols)
    mu = load_mp_reference().elemental_energies

    def predict(structures) -> tuple[np.ndarray, int]:
        valid = [structure_validity(s) for s in structures]
        usable = [
            ok and {el.symbol for el in s.composition.elements} <= allowed
            for s, ok in zip(structures, valid, strict=True)
        ]
        atoms = [AseAtomsAdaptor.get_atoms(s) for s, u in zip(structures, usable, strict=True) if u]
        results = iter(
            relax_batched(predictor, atoms, max_steps=0, device=args.device, dtype=torch.float64)
        )
        out = np.full(len(structures), np.nan)
        for i, (s, u) in enumerate(zip(structures, usable, strict=True)):
            if not u:
                continue
            r = next(results)
            if r.status != "failed" and np.isfinite(r.energy):
                out[i] = formation_energy_per_atom(s.composition, r.energy / len(s), mu)
        return out, int(sum(valid))

    train = load_dataset("mp_20", "train", progress=False).properties[args.property].to_numpy()
    print(
        f"{args.model}: {args.n} samples per target, {args.steps} steps, guidance "
        f"{args.guidance}, seed {args.seed}; predictor {args.predictor} (single points)"
    )
    print(
        f"{'target':>14} {'valid':>7} {'median':>8} {'Q1':>8} {'Q3':>8} {'<=0.5':>8} "
        f"{'shift':>8} {'s':>7}"
    )
    print(f"{'MP-20 train':>14} {len(train):7d} {_stats(train)} {'':>8} {'':>7}")
    medians: dict[str, float] = {}
    for target in [None, *args.targets]:
        start = time.perf_counter()
        samples = generator.sample(
            args.n,
            properties=None if target is None else {args.property: target},
            guidance=0.0 if target is None else args.guidance,
            seed=args.seed,
        )
        values, n_valid = predict(samples)
        seconds = time.perf_counter() - start
        label = "unconditional" if target is None else f"{target:+.2f}"
        finite = values[np.isfinite(values)]
        medians[label] = float(np.median(finite)) if len(finite) else float("nan")
        shift = medians[label] - medians["unconditional"]
        print(
            f"{label:>14} {n_valid:7d} {_stats(values, target)} {shift:8.3f} {seconds:7.1f}",
            flush=True,
        )
    conditioned = [medians[f"{t:+.2f}"] for t in args.targets]
    order = np.argsort(args.targets)
    monotone = bool(np.all(np.diff(np.asarray(conditioned)[order]) > 0))
    print(f"medians increase with the target: {monotone}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
