"""MP's energy-above-hull labels from a matgen potential: MAE and stable-classification F1.

The materials of ``mp_sample_lemat`` that carry MP's label and an MP formation energy are placed
on the built-in MP hull (:meth:`matgen.screen.hull.ReferenceHull.from_mp`) twice:

1. with their DFT formation energies (the "oracle" line: what a perfect potential would score
   on this reference);
2. with the potential's energies, converted to the MP scale through the potential's own
   elemental energies ``μ^pot`` (its relaxed elemental reference structures), exactly as
   ``matgen screen --hull mp`` does (or through MP's own, ``--elemental-energies reference``,
   for a potential trained on MP-scale energies; ``auto`` reads the potential's data card).

By default the sample's own materials are removed from the reference, so each is judged
against the *other* MP phases (as a new candidate would be); ``--keep-self`` keeps them.
The potential's energies are single points at MP's DFT-relaxed geometry, or, with ``--relax``,
after a batched FIRE relaxation of positions and cell.

    python benchmarks/bench_hull_labels.py --potential mace-mp20-energies --n 500
    python benchmarks/bench_hull_labels.py --potential mace-mp20-energies --relax --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--potential", required=True, help="shipped model name or checkpoint")
    parser.add_argument("--n", type=int, default=None, help="a seeded subset of the sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relax", action="store_true", help="relax before taking energies")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--max-atoms", type=int, default=2048)
    parser.add_argument("--keep-self", action="store_true", help="keep sample ids in the hull")
    parser.add_argument(
        "--elemental-energies",
        choices=("auto", "relaxed", "reference"),
        default="auto",
        help="μ of the potential: relaxed elemental structures, MP's (reference), or auto",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    from matgen.mlff.checkpoint import load_model
    from matgen.relax.fire import relax_batched
    from matgen.screen.hull import ReferenceHull, potential_energy_scale
    from matgen.screen.hull_labels import mp_sample_with_formation_energies, print_label_agreement
    from matgen.screen.mlff_hull import MLFFHull, relaxed_energies

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    sample = mp_sample_with_formation_energies()
    if args.n is not None and args.n < len(sample):
        sample = sample.sample(args.n, random_state=args.seed).reset_index(drop=True)
    structures = [Structure.from_str(cif, fmt="cif") for cif in sample.cif]
    labels = sample.label.to_numpy()
    print(f"{len(sample)} labelled MP materials ({int((labels <= 1e-6).sum())} on MP's hull)")

    mp = ReferenceHull.from_mp()
    if args.keep_self:
        hull = mp
    else:
        drop = set(sample.material_id)
        keep = [k for k, i in enumerate(mp.ids) if i not in drop]
        hull = ReferenceHull(
            [mp.compositions[k] for k in keep],
            [mp.energies_per_atom[k] for k in keep],
            ids=[mp.ids[k] for k in keep],
            elemental_energies=mp.elemental_energies,
            name=f"MP minus the {len(drop)} sample materials ({len(keep)} phases)",
        )
    mu_mp = mp.elemental_energies
    dft = [
        e + sum(mu_mp[el.symbol] * x for el, x in s.composition.fractional_composition.items())
        for s, e in zip(structures, sample.e_form, strict=True)
    ]
    print("\nDFT formation energies (oracle):")
    print_label_agreement(hull, structures, dft, labels)

    model = load_model(args.potential, device=args.device, dtype=dtype)
    allowed = set(model.config.symbols) if hasattr(model, "config") else None
    usable = [
        allowed is None or {el.symbol for el in s.composition.elements} <= allowed
        for s in structures
    ]
    atoms = [AseAtomsAdaptor.get_atoms(s) for s, ok in zip(structures, usable, strict=True) if ok]
    start = time.perf_counter()
    results = relax_batched(
        model,
        atoms,
        fmax=args.fmax,
        max_steps=args.max_steps if args.relax else 0,
        max_atoms=args.max_atoms,
        device=args.device,
        dtype=dtype,
    )
    seconds = time.perf_counter() - start
    energies = iter(r.energy / len(r.atoms) if r.status != "failed" else np.nan for r in results)
    per_atom = [next(energies) if ok else np.nan for ok in usable]
    what = "relaxed" if args.relax else "single points at the DFT geometry"
    steps = sum(int(r.steps) for r in results)
    print(
        f"\n{args.potential} ({what}): {len(atoms)} structures in {seconds:.1f} s "
        f"({steps} FIRE steps, {args.device}, {args.dtype}); "
        f"{len(structures) - len(atoms)} with elements outside the potential"
    )
    if args.relax:
        converged = sum(r.converged for r in results)
        print(
            f"converged: {converged} of {len(results)} (fmax {args.fmax}, {args.max_steps} steps)"
        )

    start = time.perf_counter()
    elements = {el.symbol for s in structures for el in s.composition.elements}
    source = args.elemental_energies
    if source == "auto":
        source = "reference" if potential_energy_scale(model) == "mp" else "relaxed"
    if source == "reference":
        mu_pot = {el: mu_mp[el] for el in elements}
        print("μ: MP's elemental energies (the potential's energies are on MP's scale)")
    else:
        elemental = MLFFHull(
            relaxed_energies(model, device=args.device, dtype=args.dtype, fmax=args.fmax), mp
        )
        mu_pot = elemental.potential_elemental_energies(elements)
        print(
            f"μ^pot: {len(mu_pot)} elemental references relaxed in "
            f"{time.perf_counter() - start:.1f} s"
        )

    e_form_pot = np.array(
        [
            e
            - sum(
                mu_pot.get(el.symbol, np.nan) * x
                for el, x in s.composition.fractional_composition.items()
            )
            for s, e in zip(structures, per_atom, strict=True)
        ]
    )
    err = np.abs(e_form_pot - sample.e_form.to_numpy())
    print(
        f"formation energy vs MP: MAE {1000 * np.nanmean(err):.1f} meV/atom, "
        f"median {1000 * np.nanmedian(err):.1f} meV/atom over {int(np.isfinite(err).sum())}"
    )
    print(f"\n{args.potential} energies:")
    print_label_agreement(hull, structures, per_atom, labels, elemental_energies=mu_pot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
