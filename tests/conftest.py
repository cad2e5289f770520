"""Shared fixtures: the real benchmark data under the data root (../shared/data)."""

from __future__ import annotations

import os

import pytest
import torch

from matgen.data import data_root, load_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per worker: with -n 2 on 2 cores, more threads busy-wait on each other
    # and a force-field training step gets ten times slower.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def root():
    path = data_root()
    if not (path / "mp_20" / "test.csv.gz").is_file():
        pytest.skip(f"benchmark data not found under {path}; set MATGEN_DATA")
    return path


@pytest.fixture(scope="session")
def mp20_test(root):
    return load_dataset("mp_20", "test", progress=False)


@pytest.fixture(scope="session")
def qm9_test(root):
    return load_dataset("qm9", "test")
