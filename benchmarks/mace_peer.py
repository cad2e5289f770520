"""The mace-torch half of ``bench_mlff.py``; runs inside the mace-torch environment.

Usage: PEER_PYTHON mace_peer.py MODEL.model STRUCTURES.extxyz [--threads 2] [--repeats 3]
       [--device cuda]
Prints one JSON line: structures/s per dtype, batch size and stage (model / pipeline).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("structures")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.set_num_threads(args.threads)

    from importlib.metadata import version

    from ase.io import read
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    frames = read(args.structures, index=":")
    base = torch.load(args.model, map_location="cpu", weights_only=False)
    table = utils.AtomicNumberTable([int(z) for z in base.atomic_numbers])
    r_max = float(base.r_max)
    result = {"version": version("mace-torch"), "python": sys.executable, "device": str(device)}

    def graphs(chunk):
        return [
            mace_data.AtomicData.from_config(
                mace_data.config_from_atoms(a), z_table=table, cutoff=r_max
            )
            for a in chunk
        ]

    def batch_of(chunk):
        loader = torch_geometric.dataloader.DataLoader(
            graphs(chunk), batch_size=len(chunk), shuffle=False
        )
        return next(iter(loader)).to(device).to_dict()

    for dtype_name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        torch.set_default_dtype(dtype)
        model = base.to(device=device, dtype=dtype).eval()
        result[dtype_name] = {}
        for batch_size in (1, 16):
            chunks = [frames[i : i + batch_size] for i in range(0, len(frames), batch_size)]
            prebuilt = [batch_of(c) for c in chunks]

            def run_model(prebuilt=prebuilt, model=model):
                for b in prebuilt:
                    model(b, compute_stress=True, training=False)

            def run_pipeline(chunks=chunks, model=model):
                for c in chunks:
                    model(batch_of(c), compute_stress=True, training=False)

            rates = {}
            for stage, fn in (("model", run_model), ("pipeline", run_pipeline)):
                fn()
                sync()
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    fn()
                    sync()
                    best = min(best, time.perf_counter() - start)
                rates[stage] = len(frames) / best
            result[dtype_name][str(batch_size)] = rates
            print(dtype_name, batch_size, rates, file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
