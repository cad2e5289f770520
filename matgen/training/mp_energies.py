"""Training configurations for a crystal potential from the MP structures in the data root.

MP-20 holds DFT-relaxed Materials Project structures with MP's (corrected) formation energy per
atom, but no trajectories. This module turns them into labelled configurations for
``matgen train mlff``:

- energy (eV) = ``n_atoms * (formation_energy_per_atom + sum_el x_el mu_el)``, with ``mu_el`` the
  MP elemental reference energies (the scale of the built-in hull, :mod:`matgen.screen.reference`),
  so a potential trained on them places candidates on that hull directly;
- forces = 0 and stress = 0: every structure is an MP relaxation's end point. These are weak
  labels (MP relaxes to a force threshold, not to zero), and a potential trained on minima alone
  learns nothing about far-from-equilibrium geometry: good enough to rank relaxed candidates,
  not a universal potential like MACE-MP-0 (trained on 1.6 M MPtrj frames).

Materials in ``mp_sample_lemat`` (the set with MP's energy-above-hull labels) are left out by
default so that the label agreement of a potential trained here is measured on unseen materials.

    python -m matgen.training.mp_energies --out mp20_energies  # writes train.extxyz and val.extxyz
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from matgen.data.errors import DataError
from matgen.data.root import data_root

__all__ = ["mp_energy_configurations", "write_mp_energy_sets"]

LABELLED_SAMPLE = "mp_sample_lemat/mp_baseline_sample_2473.csv.gz"


def labelled_sample_ids(root: str | Path | None = None) -> set[str]:
    """Material ids of the labelled MP sample (``mp_sample_lemat``)."""
    import pandas as pd

    path = (Path(root) if root is not None else data_root()) / LABELLED_SAMPLE
    if not path.is_file():
        raise DataError("labelled MP sample not found", path=path)
    return set(pd.read_csv(path, usecols=["material_id"]).material_id)


def mp_energy_configurations(
    split: str,
    *,
    root: str | Path | None = None,
    exclude: set[str] | None = None,
) -> list:
    """ASE ``Atoms`` of one MP-20 split labelled as described in the module docstring, in file
    order, minus the ids in ``exclude``; each carries ``info["material_id"]``."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from matgen.data import load_dataset
    from matgen.screen.reference import load_mp_reference

    mu = load_mp_reference(root).elemental_energies
    data = load_dataset("mp_20", split, root=root, progress=False)
    table = data.properties
    if "formation_energy_per_atom" not in table.columns:
        raise DataError(f"mp_20 {split}: no formation_energy_per_atom column")
    out = []
    for i in range(len(data)):
        material = str(table.material_id.iloc[i]) if "material_id" in table else data.item_id(i)
        e_form = float(table.formation_energy_per_atom.iloc[i])
        if (exclude and material in exclude) or not np.isfinite(e_form):
            continue
        atoms = data.atoms(i)
        symbols = atoms.get_chemical_symbols()
        missing = sorted(set(symbols) - set(mu))
        if missing:
            raise DataError(f"no MP elemental reference for {missing}", item=material)
        energy = len(atoms) * e_form + sum(mu[s] for s in symbols)
        atoms.calc = SinglePointCalculator(
            atoms, energy=energy, forces=np.zeros((len(atoms), 3)), stress=np.zeros(6)
        )
        atoms.info = {"material_id": material}
        out.append(atoms)
    return out


def write_mp_energy_sets(
    out_dir: str | Path,
    *,
    splits: Sequence[str] = ("train", "val"),
    root: str | Path | None = None,
    exclude_labelled: bool = True,
) -> dict[str, int]:
    """Write ``OUT_DIR/SPLIT.extxyz`` for each split; returns the configuration counts.

    Splits other than ``train`` keep only the materials whose elements all occur in the train
    split (a potential trained there has no embedding for the others; MP-20 test holds a few
    such materials, e.g. with Ar)."""
    from ase.io import write

    exclude = labelled_sample_ids(root) if exclude_labelled else set()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_elements: set[str] | None = None
    counts = {}
    for split in splits:
        configurations = mp_energy_configurations(split, root=root, exclude=exclude)
        if split != "train":
            if train_elements is None:
                train_elements = _elements(mp_energy_configurations("train", root=root))
            configurations = [
                a for a in configurations if set(a.get_chemical_symbols()) <= train_elements
            ]
        else:
            train_elements = _elements(configurations)
        write(out_dir / f"{split}.extxyz", configurations, format="extxyz")
        counts[split] = len(configurations)
    return counts


def _elements(configurations: list) -> set[str]:
    return {s for atoms in configurations for s in atoms.get_chemical_symbols()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--root", help="data root (default: MATGEN_DATA or ../shared/data)")
    parser.add_argument(
        "--keep-labelled", action="store_true", help="keep the mp_sample_lemat materials"
    )
    args = parser.parse_args(argv)
    counts = write_mp_energy_sets(
        args.out, splits=args.splits, root=args.root, exclude_labelled=not args.keep_labelled
    )
    for split, n in counts.items():
        print(f"{args.out / (split + '.extxyz')}: {n} configurations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
