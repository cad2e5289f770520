"""Screening fixtures: a tiny random potential saved as a checkpoint, rattled MP-20 inputs, and a
stand-in hull stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from matgen.data import load_dataset


@pytest.fixture(scope="session")
def tiny_potential(tmp_path_factory) -> Path:
    """A seeded random MACE small enough that relaxations take milliseconds: any element up to
    Pu, forces of order 1 eV/Å."""
    from matgen.mlff.checkpoint import save_model
    from matgen.mlff.config import preset
    from matgen.mlff.mace import MACE

    torch.manual_seed(0)
    config = preset(
        "cpu-small",
        elements=tuple(range(1, 95)),
        avg_num_neighbors=20.0,
        scale=1000.0,
        hidden_irreps="8x0e + 8x1o",
        max_ell=1,
        correlation=2,
        radial_mlp=(16, 16),
        r_max=4.0,
    )
    path = tmp_path_factory.mktemp("potential") / "tiny.pt"
    return save_model(MACE(config), path, metadata={"note": "random, for tests"})


@pytest.fixture(scope="session")
def mp20_inputs(root) -> Callable[..., Path]:
    """``write(path, indices, rattle=0.05)``: MP-20 test structures ``indices``, rattled (seeded)
    so that symmetry does not cancel the forces, written as an extxyz file."""
    import ase.io

    data = load_dataset("mp_20", "test", progress=False)

    def write(path: Path, indices: Sequence[int], *, rattle: float = 0.05) -> Path:
        frames = []
        for i in indices:
            atoms = data.atoms(i)
            atoms.calc = None
            atoms.info = {"material_id": str(atoms.info.get("material_id", i))}
            atoms.rattle(rattle, seed=i)
            frames.append(atoms)
        ase.io.write(path, frames, format="extxyz")
        return path

    return write


def _fake_hull(structures, energies):
    return [
        {
            "e_above_hull": abs(e) / len(s) % 0.2,
            "formula": s.composition.reduced_formula,  # a key ASE reserves
            "decomposition": "fake",
            "weights": [0.5, 0.5],
        }
        for s, e in zip(structures, energies, strict=True)
    ]


@pytest.fixture(scope="session")
def fake_hull():
    """A stand-in hull stage (the real one is matgen.screen.hull's): ``e_above_hull`` from the
    energy per atom, within [0, 0.2) eV/atom, scalar and list entries, one of them under a key
    that ASE reserves."""
    return _fake_hull


def _assert_same_records(got: dict[str, dict], expected: dict[str, dict]) -> None:
    assert got.keys() == expected.keys()
    for key, record in expected.items():
        assert got[key].keys() == record.keys(), key
        for name, value in record.items():
            if isinstance(value, float):
                assert np.isclose(got[key][name], value, rtol=0, atol=1e-6), (key, name)
            else:
                assert got[key][name] == value, (key, name)


@pytest.fixture(scope="session")
def assert_same_records():
    """``check(got, expected)``: two stores' records (by candidate id) are equal, floats (energies,
    forces) to 1e-6: batches of other compositions change the last bits of a relaxation."""
    return _assert_same_records
