"""Shared fixtures: the real benchmark data under the data root (../shared/data)."""

from __future__ import annotations

import pytest

from matgen.data import data_root, load_dataset


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
