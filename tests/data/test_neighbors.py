"""Neighbor lists equal pymatgen's on real crystals, tiny skewed cells and molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from matgen.data import AtomsBatch, edge_vectors, neighbor_list


def _pymatgen_pairs(structure: Structure, cutoff: float) -> dict[tuple, float]:
    centers, points, images, distances = structure.get_neighbor_list(cutoff, exclude_self=True)
    return {
        (int(i), int(j), *np.round(s).astype(int).tolist()): float(d)
        for i, j, s, d in zip(centers, points, images, distances, strict=True)
    }


def _our_pairs(numbers, positions, cell, pbc, cutoff) -> dict[tuple, float]:
    edge_index, shifts = neighbor_list(positions, cell, pbc, cutoff)
    vectors = positions[edge_index[1]] - positions[edge_index[0]] + shifts @ cell
    distances = np.linalg.norm(vectors, axis=1)
    return {
        (int(i), int(j), *s.tolist()): float(d)
        for i, j, s, d in zip(edge_index[0], edge_index[1], shifts, distances, strict=True)
    }


def _assert_same(ours: dict, theirs: dict, cutoff: float, label: str):
    # Pairs within 1e-8 Å of the cutoff may fall either side in either code.
    borderline = {k for k, d in {**ours, **theirs}.items() if abs(d - cutoff) < 1e-8}
    missing = set(theirs) - set(ours) - borderline
    extra = set(ours) - set(theirs) - borderline
    assert not missing and not extra, f"{label}: {len(missing)} missing, {len(extra)} extra pairs"
    common = set(ours) & set(theirs)
    worst = max((abs(ours[k] - theirs[k]) for k in common), default=0.0)
    assert worst < 1e-6, f"{label}: distances differ by {worst} Å"


def test_equals_pymatgen_on_200_mp20_structures(mp20_test):
    rng = np.random.default_rng(0)
    for i in rng.choice(len(mp20_test), 200, replace=False):
        structure = mp20_test.structure(int(i))
        arrays = mp20_test.collection.arrays(int(i))
        _assert_same(
            _our_pairs(*arrays, 6.0),
            _pymatgen_pairs(structure, 6.0),
            6.0,
            mp20_test.item_id(int(i)),
        )


def test_skewed_one_atom_cell_with_cutoff_three_times_the_cell():
    cell = np.array([[2.0, 0.0, 0.0], [1.9, 0.4, 0.0], [1.7, 0.3, 0.5]])  # strongly sheared
    lengths = np.linalg.norm(cell, axis=1)
    cutoff = 3.0 * lengths.max()
    structure = Structure(Lattice(cell), ["Si"], [[0.3, 0.2, 0.1]])
    ours = _our_pairs(np.array([14]), structure.cart_coords, cell, np.ones(3, bool), cutoff)
    theirs = _pymatgen_pairs(structure, cutoff)
    assert len(theirs) > 1000  # thousands of images of the one atom
    _assert_same(ours, theirs, cutoff, "skewed cell")


def test_equals_pymatgen_on_a_qm9_molecule(qm9_test):
    numbers, positions, _, _ = qm9_test.collection.arrays(100)
    cell = np.eye(3) * 100.0
    molecule = Structure(
        Lattice(cell, pbc=(False, False, False)),
        numbers.tolist(),
        positions,
        coords_are_cartesian=True,
    )
    ours = _our_pairs(numbers, positions, np.zeros((3, 3)), np.zeros(3, bool), 2.5)
    theirs = _pymatgen_pairs(molecule, 2.5)
    assert all(k[2:] == (0, 0, 0) for k in ours)
    _assert_same(ours, theirs, 2.5, "qm9 molecule")


def test_torch_path_equals_numpy_path(mp20_test):
    _, positions, cell, pbc = mp20_test.collection.arrays(7)
    e_np, s_np = neighbor_list(positions, cell, pbc, 5.0)
    e_t, s_t = neighbor_list(torch.tensor(positions), torch.tensor(cell), torch.tensor(pbc), 5.0)
    key_np = sorted(zip(*e_np.tolist(), *s_np.T.tolist(), strict=True))
    key_t = sorted(zip(*e_t.tolist(), *s_t.T.tolist(), strict=True))
    assert key_np == key_t


def test_partial_periodicity_matches_pymatgen():
    cell = np.array([[3.0, 0.0, 0.0], [0.5, 3.2, 0.0], [0.0, 0.0, 20.0]])
    structure = Structure(
        Lattice(cell, pbc=(True, True, False)), ["C", "C"], [[0, 0, 0.5], [0.5, 0.4, 0.55]]
    )
    ours = _our_pairs(
        np.array([6, 6]), structure.cart_coords, cell, np.array([True, True, False]), 4.0
    )
    _assert_same(ours, _pymatgen_pairs(structure, 4.0), 4.0, "slab")
    assert all(k[4] == 0 for k in ours)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_vectors_are_differentiable_in_positions_and_cell(mp20_test, dtype):
    batch = AtomsBatch.from_collection(
        mp20_test.collection, [3], dtype=torch.float64
    ).with_neighbors(4.0)
    positions = batch.positions.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)

    def energy(p, c):
        r = edge_vectors(p, c, batch.batch, batch.edge_index, batch.shifts).norm(dim=1)
        return torch.exp(-r).sum()

    assert torch.autograd.gradcheck(energy, (positions, cell))
    vectors = edge_vectors(
        positions.to(dtype), cell.to(dtype), batch.batch, batch.edge_index, batch.shifts
    )
    assert vectors.dtype == dtype
    assert float(vectors.detach().norm(dim=1).max()) <= 4.0 + 1e-5


def test_invalid_cutoff_is_rejected():
    with pytest.raises(ValueError, match="cutoff must be positive"):
        neighbor_list(np.zeros((1, 3)), np.eye(3), True, 0.0)
