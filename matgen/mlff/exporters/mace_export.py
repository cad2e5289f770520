"""Export a mace-torch model to plain tensors that matgen imports (``matgen mlff import-mace``).

Run this file with the Python of an environment that has mace-torch; it does not import
matgen, and matgen never imports mace-torch (mace-torch pins an old e3nn). mace-torch saves
models as pickled modules, so reading one executes code: do it only here, in the trusted
environment where the model was made. The export itself is plain data::

    {"format": "mace-export/1", "mace_version", "model_class", "hyperparameters": {...},
     "state_dict": {name: tensor}}

and loads with ``torch.load(path, weights_only=True)``.

Usage (in the mace-torch environment):
    python mace_export.py MODEL.model OUT.pt                 # a saved mace-torch model
    python mace_export.py --random-mp0-medium OUT.pt [--seed 0] [--save-model M.model]
    python mace_export.py MODEL.model OUT.pt --eval STRUCTURES.extxyz REF.npz [--dtype float64]

``--eval`` writes mace-torch's own energies, forces and stresses of the structures (ASE sign
and units) for parity checks.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

FORMAT = "mace-export/1"
MP_ELEMENTS = list(range(1, 84)) + list(range(89, 95))
SUPPORTED_INTERACTIONS = {"RealAgnosticInteractionBlock", "RealAgnosticResidualInteractionBlock"}


def _mace_version() -> str:
    from importlib.metadata import version

    return version("mace-torch")


def hyperparameters(model: torch.nn.Module) -> dict:
    """Everything matgen needs to rebuild the architecture, read from the modules."""
    problems = []
    cls = type(model).__name__
    if cls not in ("MACE", "ScaleShiftMACE"):
        problems.append(f"model class {cls} (supported: MACE, ScaleShiftMACE)")
    for attribute in ("pair_repulsion", "joint_embedding", "embedding_readout"):
        if hasattr(model, attribute):
            problems.append(f"{attribute} is not supported")
    radial = model.radial_embedding
    if hasattr(radial, "distance_transform"):
        problems.append("distance transforms (Agnesi/Soft) are not supported")
    if getattr(radial, "apply_cutoff", True) is False:
        problems.append("apply_cutoff=False is not supported")
    if type(radial.bessel_fn).__name__ != "BesselBasis":
        problems.append(f"radial basis {type(radial.bessel_fn).__name__} (supported: Bessel)")
    heads = getattr(model, "heads", ["Default"])
    if len(heads) != 1:
        problems.append(f"{len(heads)} heads (one is supported; select a head first)")
    kinds = [type(block).__name__ for block in model.interactions]
    for k in kinds:
        if k not in SUPPORTED_INTERACTIONS:
            problems.append(f"interaction block {k}")
    if any(k != "RealAgnosticResidualInteractionBlock" for k in kinds[1:]):
        problems.append("only the first interaction may be non-residual")
    if problems:
        raise SystemExit("cannot export this model: " + "; ".join(problems))

    r_max = float(model.r_max)
    bessel = radial.bessel_fn.bessel_weights.detach().double()
    expected = math.pi / r_max * torch.arange(1, bessel.numel() + 1, dtype=torch.float64)
    if not torch.allclose(bessel, expected, rtol=1e-6):
        raise SystemExit("cannot export this model: trained Bessel frequencies are not supported")
    last = model.readouts[-1]
    acts = [getattr(getattr(a, "f", a), "__name__", str(a)) for a in last.non_linearity.acts]
    if acts != ["silu"]:
        raise SystemExit(f"cannot export this model: readout gate {acts} (supported: silu)")
    energies = model.atomic_energies_fn.atomic_energies.detach().double().reshape(-1)
    scale = shift = None
    if hasattr(model, "scale_shift"):
        scale = float(torch.atleast_1d(model.scale_shift.scale)[0])
        shift = float(torch.atleast_1d(model.scale_shift.shift)[0])
    first = model.interactions[0]
    hidden_layers = [layer for name, layer in first.conv_tp_weights.named_children()]
    return {
        "elements": [int(z) for z in model.atomic_numbers.tolist()],
        "r_max": r_max,
        "num_bessel": int(bessel.numel()),
        "cutoff_p": int(radial.cutoff_fn.p),
        "max_ell": int(model.spherical_harmonics.irreps_out.lmax),
        "hidden_irreps": str(model.products[0].linear.irreps_out),
        "correlation": [
            int(p.symmetric_contractions.contractions[0].correlation) for p in model.products
        ],
        "num_interactions": int(model.num_interactions),
        "radial_mlp": [int(layer.weight.shape[1]) for layer in hidden_layers[:-1]],
        "mlp_irreps": str(last.linear_1.irreps_out),
        "first_interaction": "element"
        if kinds[0] == "RealAgnosticInteractionBlock"
        else "residual",
        "avg_num_neighbors": float(first.avg_num_neighbors),
        "atomic_energies": energies.tolist(),
        "scale": 1.0 if scale is None else scale,
        "shift": 0.0 if shift is None else shift,
    }


def export(model: torch.nn.Module, path: Path) -> None:
    payload = {
        "format": FORMAT,
        "mace_version": _mace_version(),
        "model_class": type(model).__name__,
        "hyperparameters": hyperparameters(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    torch.load(path, weights_only=True)  # the export must be plain data


def _random_model(seed: int, elements: list[int], **hyper) -> torch.nn.Module:
    """A randomly initialised ScaleShiftMACE (element-first layer one, residual after)."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    return modules.ScaleShiftMACE(
        num_polynomial_cutoff=5,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2,
        num_elements=len(elements),
        atomic_numbers=elements,
        correlation=3,
        gate=torch.nn.functional.silu,
        hidden_irreps=o3.Irreps(hyper.pop("hidden_irreps")),
        MLP_irreps=o3.Irreps(hyper.pop("MLP_irreps")),
        **hyper,
    )


def random_mp0_medium(seed: int) -> torch.nn.Module:
    """Random weights with MACE-MP-0 medium hyperparameters, with non-trivial reference
    energies, scale and shift."""
    rng = np.random.default_rng(seed)
    return _random_model(
        seed,
        MP_ELEMENTS,
        r_max=6.0,
        num_bessel=10,
        max_ell=3,
        hidden_irreps="128x0e+128x1o",
        MLP_irreps="16x0e",
        atomic_energies=rng.normal(-4.0, 2.0, len(MP_ELEMENTS)),
        avg_num_neighbors=35.0,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.2,
        atomic_inter_shift=-0.15,
    )


def random_tiny(seed: int) -> torch.nn.Module:
    """A small random model (H, O, Na, Si, Cl; 8 channels, L=1, max_ell 2) for test fixtures."""
    return _random_model(
        seed,
        [1, 8, 11, 14, 17],
        r_max=4.5,
        num_bessel=6,
        max_ell=2,
        hidden_irreps="8x0e+8x1o",
        MLP_irreps="8x0e",
        atomic_energies=np.array([-1.1, -4.2, -1.3, -5.4, -2.5]),
        avg_num_neighbors=6.0,
        radial_MLP=[16, 16],
        atomic_inter_scale=2.0,
        atomic_inter_shift=0.1,
    )


def evaluate(model: torch.nn.Module, structures: Path, out: Path, dtype: torch.dtype) -> None:
    """mace-torch's energies (eV), forces (eV/Å) and stresses (eV/Å³, 3x3) of every frame."""
    from ase.io import read
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    model = model.to(dtype).eval()
    table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    frames = read(structures, index=":")
    graphs = [
        mace_data.AtomicData.from_config(
            mace_data.config_from_atoms(a), z_table=table, cutoff=float(model.r_max)
        )
        for a in frames
    ]
    loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=1, shuffle=False)
    energies, forces, stresses = [], [], []
    for batch in loader:
        result = model(batch.to_dict(), compute_stress=True, training=False)
        energies.append(float(result["energy"].detach()[0]))
        forces.append(result["forces"].detach().double().numpy())
        stresses.append(result["stress"].detach().double().numpy()[0])
    np.savez(
        out,
        energy=np.array(energies),
        forces=np.concatenate(forces),
        stress=np.stack(stresses),
        n_atoms=np.array([len(a) for a in frames]),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", type=Path, help="saved mace-torch model")
    parser.add_argument("output", nargs="?", type=Path, help="export file to write")
    parser.add_argument(
        "--random-mp0-medium",
        type=Path,
        metavar="OUT",
        help="export a random MACE-MP-0-medium-like model instead",
    )
    parser.add_argument(
        "--random-tiny",
        type=Path,
        metavar="OUT",
        help="export a small random model (for test fixtures)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-model", type=Path, help="also save the mace-torch module")
    parser.add_argument("--eval", nargs=2, type=Path, metavar=("STRUCTURES", "REF_NPZ"))
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    if args.random_mp0_medium:
        model, output = random_mp0_medium(args.seed), args.random_mp0_medium
    elif args.random_tiny:
        model, output = random_tiny(args.seed), args.random_tiny
    elif args.model and args.output:
        model = torch.load(args.model, map_location="cpu", weights_only=False)
        output = args.output
    else:
        parser.error("give MODEL OUTPUT, or --random-mp0-medium OUT")
    model = model.double()
    export(model, output)
    print(f"exported {type(model).__name__} to {output}", file=sys.stderr)
    if args.save_model:
        torch.save(model, args.save_model)
    if args.eval:
        evaluate(model, args.eval[0], args.eval[1], getattr(torch, args.dtype))


if __name__ == "__main__":
    main()
