#!/usr/bin/env bash
# Build the mace-torch peer environment used by benchmarks/bench_mlff.py and the slow parity test.
# mace-torch pins e3nn 0.4.4; it is installed with --no-deps beside e3nn 0.6.0 (same results, see
# issue 4), in its own venv so that it never enters matgen's.  Usage: benchmarks/mace_peer_env.sh [DIR]
set -euo pipefail
ENV="${1:-$HOME/.cache/matgen/mace-peer}"
if [ ! -x "$ENV/bin/python" ]; then
    python3 -m venv "$ENV"
fi
"$ENV/bin/pip" install -q torch==2.13.0 e3nn==0.6.0 numpy scipy ase pandas matplotlib \
    opt_einsum opt_einsum_fx torch-ema matscipy prettytable configargparse pyyaml h5py \
    lmdb orjson tqdm GitPython
"$ENV/bin/pip" install -q --no-deps mace-torch==0.3.16 torchmetrics lightning-utilities python-hostlist
"$ENV/bin/python" -c "import mace, e3nn, torch; print('mace-torch env ready:', e3nn.__version__, torch.__version__)"
echo "$ENV/bin/python"
