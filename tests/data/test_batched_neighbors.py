"""The batched neighbor-list kernel equals pymatgen and vesin on real crystals, molecules, slabs,
tiny skewed and left-handed cells, unwrapped positions and mixed batches."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matgen.data import AtomsBatch, batched_neighbor_list, neighbor_list
from matgen.data import _nl_kernel as kernel
from matgen.data import neighbors as nl


def _stack(systems):
    """(positions, cells, pbc, n_atoms) of ``[(positions, cell, pbc), ...]``."""
    positions = np.concatenate([np.asarray(p, float).reshape(-1, 3) for p, _, _ in systems])
    cells = np.stack([np.asarray(c, float) for _, c, _ in systems])
    pbc = np.stack([np.broadcast_to(np.asarray(f, bool), 3) for _, _, f in systems])
    n_atoms = np.array([len(p) for p, _, _ in systems])
    return positions, cells, pbc, n_atoms


def _vector_keys(positions, cells, n_atoms, edge_index, shifts, system, reference):
    """{(i, j, S): |r_ij|} of one system's edges in local atom indices, where ``S`` is the image
    that gives the same vector ``r_ij`` from the ``reference`` positions of that system."""
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    owner = np.searchsorted(offsets, edge_index[0], side="right") - 1
    mine = owner == system
    i, j = edge_index[0, mine], edge_index[1, mine]
    vectors = positions[j] - positions[i] + shifts[mine] @ cells[system]
    lo = offsets[system]
    base = reference[j - lo] - reference[i - lo]
    cell = cells[system]
    periodic = np.abs(cell).sum(1) > 0
    images = np.zeros_like(vectors)
    if periodic.any():
        images[:, periodic] = (vectors - base) @ np.linalg.pinv(cell[periodic])
    return {
        (int(a - lo), int(b - lo), *np.round(m).astype(int).tolist()): float(np.linalg.norm(v))
        for a, b, m, v in zip(i, j, images, vectors, strict=True)
    }


def _pymatgen_keys(structure: Structure, cutoff: float):
    centers, points, images, distances = structure.get_neighbor_list(cutoff, exclude_self=True)
    return {
        (int(a), int(b), *np.round(m).astype(int).tolist()): float(d)
        for a, b, m, d in zip(centers, points, images, distances, strict=True)
    }


def _assert_same(ours: dict, theirs: dict, cutoff: float, label: str):
    borderline = {k for k, d in {**ours, **theirs}.items() if abs(d - cutoff) < 1e-8}
    missing = set(theirs) - set(ours) - borderline
    extra = set(ours) - set(theirs) - borderline
    assert not missing and not extra, f"{label}: {len(missing)} missing, {len(extra)} extra"
    worst = max((abs(ours[k] - theirs[k]) for k in set(ours) & set(theirs)), default=0.0)
    assert worst < 1e-6, f"{label}: distances differ by {worst} Å"


def _per_system_vesin(positions, cells, pbc, n_atoms, cutoff):
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    edges, shifts = [], []
    for b in range(len(n_atoms)):
        e, s = neighbor_list(positions[offsets[b] : offsets[b + 1]], cells[b], pbc[b], cutoff)
        edges.append(e + offsets[b])
        shifts.append(s)
    return np.concatenate(edges, 1), np.concatenate(shifts)


def _edge_set(edge_index, shifts):
    return set(zip(*edge_index.tolist(), *shifts.T.tolist(), strict=True))


def test_one_call_over_200_mp20_structures_equals_pymatgen(mp20_test):
    rng = np.random.default_rng(1)
    picks = [int(i) for i in rng.choice(len(mp20_test), 200, replace=False)]
    arrays = [mp20_test.collection.arrays(i) for i in picks]
    positions, cells, pbc, n_atoms = _stack([(p, c, f) for _, p, c, f in arrays])
    edge_index, shifts = batched_neighbor_list(positions, cells, pbc, n_atoms, 6.0)
    for k, i in enumerate(picks):
        _assert_same(
            _vector_keys(positions, cells, n_atoms, edge_index, shifts, k, arrays[k][1]),
            _pymatgen_keys(mp20_test.structure(i), 6.0),
            6.0,
            mp20_test.item_id(i),
        )


@pytest.mark.parametrize("threads", [1, 4])
def test_equals_vesin_on_2000_mp20_structures(mp20_test, threads):
    batch = AtomsBatch.from_collection(mp20_test.collection, range(2000))
    args = (batch.positions.numpy(), batch.cell.numpy(), batch.pbc.numpy(), batch.n_atoms.numpy())
    ours = batched_neighbor_list(*args, 5.0, threads=threads)
    assert ours[0].dtype == np.int64 and ours[1].dtype == np.int64
    assert ours[0].flags.c_contiguous and ours[1].flags.c_contiguous
    system = batch.batch.numpy()[ours[0][0]]
    assert (np.diff(system) >= 0).all()  # grouped by system, in order
    assert (system == batch.batch.numpy()[ours[0][1]]).all()
    assert _edge_set(*ours) == _edge_set(*_per_system_vesin(*args, 5.0))
    # edges 2k and 2k + 1 are each other's reverse, own images included
    (i, j), s = ours
    assert len(s) % 2 == 0
    assert (i[0::2] == j[1::2]).all() and (j[0::2] == i[1::2]).all()
    assert (s[0::2] == -s[1::2]).all()
    assert (i == j).any()  # self-images are among them


def test_with_neighbors_methods_agree(mp20_test):
    plain = AtomsBatch.from_collection(mp20_test.collection, range(64))
    batch = plain.with_neighbors(5.0)
    by_vesin = plain.with_neighbors(5.0, method="vesin")
    args = (batch.positions.numpy(), batch.cell.numpy(), batch.pbc.numpy(), batch.n_atoms.numpy())
    expected = _edge_set(*_per_system_vesin(*args, 5.0))
    assert _edge_set(batch.edge_index.numpy(), batch.shifts.numpy()) == expected
    assert _edge_set(by_vesin.edge_index.numpy(), by_vesin.shifts.numpy()) == expected
    with pytest.raises(ValueError, match="method must be"):
        plain.with_neighbors(5.0, method="cells")


def test_skewed_left_handed_and_unwrapped_one_atom_cells():
    sheared = np.array([[2.0, 0.0, 0.0], [1.9, 0.4, 0.0], [1.7, 0.3, 0.5]])
    left = sheared[[1, 0, 2]]  # negative determinant
    assert np.linalg.det(left) < 0
    for label, cell in [("sheared", sheared), ("left-handed", left)]:
        cutoff = 3.0 * np.linalg.norm(cell, axis=1).max()
        structure = Structure(Lattice(cell), ["Si"], [[0.3, 0.2, 0.1]])
        # the same atom given far outside the cell: the edges' vectors must not change
        unwrapped = structure.cart_coords + np.array([3, -2, 5]) @ cell
        for positions in (structure.cart_coords, unwrapped):
            e, s = batched_neighbor_list(positions, cell[None], [[True] * 3], [1], cutoff)
            ours = _vector_keys(
                positions, cell[None], np.array([1]), e, s, 0, structure.cart_coords
            )
            theirs = _pymatgen_keys(structure, cutoff)
            assert len(theirs) > 1000
            _assert_same(ours, theirs, cutoff, label)


def test_molecules_slabs_wires_and_crystals_in_one_batch(mp20_test, qm9_test):
    systems, structures = [], []
    for k in (3, 100, 2000):
        numbers, positions, _, _ = qm9_test.collection.arrays(k)
        systems.append((positions, np.zeros((3, 3)), False))
        structures.append(
            Structure(
                Lattice(np.eye(3) * 100.0, pbc=(False, False, False)),
                numbers.tolist(),
                positions,
                coords_are_cartesian=True,
            )
        )
    slab_cell = np.array([[3.0, 0.0, 0.0], [0.5, 3.2, 0.0], [0.3, 0.2, 20.0]])
    for flags in [(True, True, False), (False, True, True), (True, False, False)]:
        lattice = Lattice(slab_cell, pbc=flags)
        structure = Structure(
            lattice, ["C", "C", "O"], [[0, 0, 0.5], [0.5, 0.4, 0.55], [0.2, 0.9, 0.45]]
        )
        systems.append((structure.cart_coords, slab_cell, flags))
        structures.append(structure)
    for k in (0, 5):
        _, positions, cell, pbc = mp20_test.collection.arrays(k)
        systems.append((positions, cell, pbc))
        structures.append(mp20_test.structure(k))
    positions, cells, pbc, n_atoms = _stack(systems)
    edge_index, shifts = batched_neighbor_list(positions, cells, pbc, n_atoms, 4.0)
    for b, structure in enumerate(structures):
        ours = _vector_keys(positions, cells, n_atoms, edge_index, shifts, b, structure.cart_coords)
        assert ours or b >= 6, f"system {b} has no edges"
        _assert_same(ours, _pymatgen_keys(structure, 4.0), 4.0, f"system {b}")
    shifted = np.abs(shifts) > 0
    assert not shifted[np.isin(edge_index[0], np.arange(n_atoms[:3].sum()))].any()


def test_large_sparse_systems_go_through_vesin_and_keep_system_order(mp20_test):
    rng = np.random.default_rng(0)
    big = rng.uniform(0, 25.0, (400, 3))  # 400 atoms in a 25 Å cube: cell list territory
    _, small_positions, small_cell, _ = mp20_test.collection.arrays(1)
    positions, cells, pbc, n_atoms = _stack(
        [
            (small_positions, small_cell, True),
            (big, np.eye(3) * 25.0, True),
            (small_positions, small_cell, True),
        ]
    )
    fill = 4 / 3 * np.pi * 4.0**3 / 25.0**3
    assert n_atoms[1] > nl.KERNEL_MAX_ATOMS and fill < nl.KERNEL_MIN_FILL
    edge_index, shifts = batched_neighbor_list(positions, cells, pbc, n_atoms, 4.0)
    owner = np.repeat(np.arange(3), n_atoms)[edge_index[0]]
    assert (np.diff(owner) >= 0).all() and set(owner.tolist()) == {0, 1, 2}
    assert _edge_set(edge_index, shifts) == _edge_set(
        *_per_system_vesin(positions, cells, pbc, n_atoms, 4.0)
    )


def test_buffers_grow_when_the_estimate_is_too_small(mp20_test):
    batch = AtomsBatch.from_collection(mp20_test.collection, range(50))
    positions, cells = batch.positions.numpy().astype(float), batch.cell.numpy().astype(float)
    pbc, n_atoms = batch.pbc.numpy(), batch.n_atoms.numpy()
    expected = batched_neighbor_list(positions, cells, pbc, n_atoms, 5.0, threads=1)
    rotations, frames = nl._triangular_frames(cells, pbc)
    rotated = np.einsum("nk,nkl->nl", positions, rotations[np.repeat(np.arange(50), n_atoms)])
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    systems = np.arange(50)
    # bounds far above the truth: every system is counted first, and the buffers must grow
    for bounds in (np.full(50, 10**6, np.int64),):
        ij, shifts, count = kernel.collect_edges(
            rotated, frames, pbc, offsets, systems, 5.0, bounds, 16
        )
        assert len(ij) > 2 * 16  # grew
        got = (ij[: 2 * count].reshape(2, count), shifts[:count])
        assert _edge_set(*got) == _edge_set(*expected)


def test_bad_input_names_the_system():
    cell = np.stack([np.eye(3) * 4.0, np.array([[2.0, 0, 0], [4.0, 0, 0], [0, 0, 3.0]])])
    positions = np.zeros((2, 3))
    with pytest.raises(ValueError, match="system 1: degenerate periodic cell"):
        batched_neighbor_list(positions, cell, np.ones((2, 3), bool), [1, 1], 3.0)
    positions[1, 0] = np.nan
    with pytest.raises(ValueError, match="system 1: non-finite positions"):
        batched_neighbor_list(positions, np.eye(3)[None].repeat(2, 0), True, [1, 1], 3.0)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        batched_neighbor_list(np.zeros((3, 3)), np.eye(3)[None], True, [2], 3.0)
    with pytest.raises(ValueError, match="cutoff must be positive"):
        batched_neighbor_list(np.zeros((1, 3)), np.eye(3)[None], True, [1], -1.0)


def test_empty_systems_and_batches():
    e, s = batched_neighbor_list(
        np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3), bool), [], 3.0
    )
    assert e.shape == (2, 0) and s.shape == (0, 3)
    e, s = batched_neighbor_list(
        np.zeros((1, 3)), np.stack([np.eye(3) * 5, np.eye(3) * 5]), True, [0, 1], 3.0
    )
    assert e.shape == (2, 0)
    e, s = batched_neighbor_list(
        np.zeros((1, 3)), np.stack([np.eye(3) * 5, np.eye(3) * 2]), True, [0, 1], 2.5
    )
    assert e.shape[1] == 6 and (e == 0).all()  # the six images 2 Å away (the next are 2.83 Å)
