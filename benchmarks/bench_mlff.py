"""matgen's MACE against mace-torch: energy + forces + stress throughput on MP-20 test structures.

Both run in this one invocation on this machine, with identical hyperparameters (MACE-MP-0
medium: 128x0e + 128x1o, max_ell 3, correlation 3, 2 interactions, r_max 6 Å, 10 Bessel
functions, 89 elements) and, through the importer, identical weights. For float64 and float32
and batch sizes 1 and 16 it prints structures/s of

- ``model``: forward + forces + stress on prebuilt batches (neighbour lists excluded);
- ``pipeline``: from ASE ``Atoms`` to energies, forces and stress (batching and neighbour
  lists included),

and the ratio matgen / mace-torch. The peer runs in its own environment (mace-torch pins an old
e3nn, so it never enters matgen's): pass its interpreter with ``--peer-python``; build it with
``benchmarks/mace_peer_env.sh``. Without a peer, only matgen's figures are printed.

On a GPU (``--device cuda``) both sides run there, timed with CUDA synchronisation; neighbour
lists stay on the CPU in the pipeline stage of both (vesin for matgen, matscipy for mace-torch).
``--structures FILE`` reads the structures from an extxyz file (the first ``--n``) instead of the
data root, for machines without pymatgen or the data.

Usage: python benchmarks/bench_mlff.py [--peer-python /path/to/mace-env/bin/python]
       [--n 64] [--threads 2] [--repeats 3] [--device cuda] [--structures FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
EXPORT_SCRIPT = HERE.parent / "matgen" / "mlff" / "exporters" / "mace_export.py"
PEER_SCRIPT = HERE / "mace_peer.py"
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def measure_matgen(model, atoms, *, dtype, batch_size, repeats, device):
    from matgen.data import AtomsBatch

    model = model.to(device=device, dtype=dtype)
    chunks = _chunks(atoms, batch_size)
    prebuilt = [
        AtomsBatch.from_atoms(c, dtype=dtype).with_neighbors(model.r_max).to(device) for c in chunks
    ]

    def run_model():
        for b in prebuilt:
            model(b)

    def run_pipeline():
        for c in chunks:
            model(AtomsBatch.from_atoms(c, dtype=dtype).with_neighbors(model.r_max).to(device))

    out = {}
    for name, fn in (("model", run_model), ("pipeline", run_pipeline)):
        fn()  # warm-up
        _sync(device)
        best = min(_timed(fn, device) for _ in range(repeats))
        out[name] = len(atoms) / best
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer-python", type=Path, help="python of an env with mace-torch")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--structures", type=Path, help="extxyz file instead of MP-20 test")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from ase.io import read, write

    from matgen.mlff.checkpoint import load_model
    from matgen.mlff.config import preset
    from matgen.mlff.mace import MACE

    if args.structures:
        atoms = read(args.structures, index=f":{args.n}")
        for a in atoms:
            a.calc = None
    else:
        from matgen.data import load_dataset

        data = load_dataset("mp_20", "test", progress=False)
        atoms = []
        for i in range(args.n):
            a = data.atoms(i)
            a.calc = None
            atoms.append(a)
    n_atoms = sum(len(a) for a in atoms)
    work = Path(tempfile.mkdtemp(prefix="bench_mlff_"))
    structures = work / "structures.extxyz"
    write(structures, atoms, format="extxyz")
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    )
    print(f"{len(atoms)} MP-20 test structures ({n_atoms} atoms), {where}")

    peer = None
    if args.peer_python:
        export = work / "mp0_medium_export.pt"
        pickled = work / "mp0_medium.model"
        subprocess.run(
            [
                str(args.peer_python),
                str(EXPORT_SCRIPT),
                "--random-mp0-medium",
                str(export),
                "--seed",
                str(args.seed),
                "--save-model",
                str(pickled),
            ],
            check=True,
        )
        from matgen.mlff.mace_import import import_mace_export

        model = load_model(import_mace_export(export, work / "matgen_mp0_medium.pt"))
        result = subprocess.run(
            [
                str(args.peer_python),
                str(PEER_SCRIPT),
                str(pickled),
                str(structures),
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--device",
                str(device),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        peer = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"mace-torch {peer['version']} ({peer['python']})")
    else:
        rng = np.random.default_rng(args.seed)
        config = preset("mp0-medium", avg_num_neighbors=40.0, scale=1.2, shift=-0.3)
        config = config.replace(atomic_energies=tuple(rng.normal(-3, 1, len(config.elements))))
        torch.manual_seed(args.seed)
        model = MACE(config)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"MACE-MP-0-medium-like model: {params / 1e6:.2f} M parameters")

    header = (
        f"{'dtype':8s}{'batch':>6s} {'stage':9s}{'matgen /s':>11s}{'mace /s':>10s}{'ratio':>8s}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for dtype_name, dtype in DTYPES.items():
        for batch_size in (1, 16):
            ours = measure_matgen(
                model,
                atoms,
                dtype=dtype,
                batch_size=batch_size,
                repeats=args.repeats,
                device=device,
            )
            for stage in ("model", "pipeline"):
                theirs = peer[dtype_name][str(batch_size)][stage] if peer else None
                ratio = f"{ours[stage] / theirs:8.2f}" if theirs else f"{'-':>8s}"
                mace = f"{theirs:10.2f}" if theirs else f"{'-':>10s}"
                print(f"{dtype_name:8s}{batch_size:6d} {stage:9s}{ours[stage]:11.2f}{mace}{ratio}")
                rows.append((dtype_name, batch_size, stage, ours[stage], theirs))
            sys.stdout.flush()
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
