"""The batched Niggli reduction gives the unique reduced cell of a lattice whatever basis it is
given in (and agrees with pymatgen's); the automorphism groups have the orders of the 14 Bravais
lattices' point groups; frames are bases of the input lattice."""

from __future__ import annotations

import numpy as np
import pytest

from matgen.generators.crystal.canonical_cell import (
    canonical_frames,
    lattice_automorphisms,
    niggli_transform,
)


def _parameters(cells: np.ndarray) -> np.ndarray:
    """``(n, 6)``: ``A, B, C, ξ, η, ζ``."""
    g = cells @ cells.transpose(0, 2, 1)
    return np.stack(
        [g[:, 0, 0], g[:, 1, 1], g[:, 2, 2], 2 * g[:, 1, 2], 2 * g[:, 0, 2], 2 * g[:, 0, 1]], 1
    )


def _assert_niggli(cells: np.ndarray, rel: float = 1e-8) -> None:
    """The main Niggli conditions (Křivý & Gruber 1976), with a small tolerance."""
    for a, b, c, xi, eta, zeta in _parameters(cells):
        tol = rel * c
        assert a <= b + tol and b <= c + tol
        assert abs(xi) <= b + tol and abs(eta) <= a + tol and abs(zeta) <= a + tol
        signs = np.array([xi, eta, zeta])
        assert np.all(signs > -tol) or np.all(signs < tol)
        assert xi + eta + zeta + a + b >= -tol


def _bravais() -> dict[str, tuple[np.ndarray, int]]:
    """A primitive cell of each Bravais lattice and the order of its point group."""
    a, b, c = 3.1, 4.3, 5.7
    cub, tet, ort = np.eye(3) * a, np.diag([a, a, c]), np.diag([a, b, c])
    body = 0.5 * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]])
    face = 0.5 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    base = np.array([[0.5, -0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])
    beta = np.deg2rad(103.0)
    mono = np.array([[a, 0, 0], [0, b, 0], [c * np.cos(beta), 0, c * np.sin(beta)]])
    alpha = np.deg2rad(75.0)
    cy = (np.cos(alpha) - np.cos(alpha) ** 2) / np.sin(alpha)
    rhombo = a * np.array(
        [
            [1, 0, 0],
            [np.cos(alpha), np.sin(alpha), 0],
            [np.cos(alpha), cy, np.sqrt(1 - np.cos(alpha) ** 2 - cy**2)],
        ]
    )
    hexa = np.array([[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]])
    rng = np.random.default_rng(7)
    return {
        "cP": (cub, 48),
        "cI": (body @ cub, 48),
        "cF": (face @ cub, 48),
        "tP": (tet, 16),
        "tI": (body @ tet, 16),
        "oP": (ort, 8),
        "oI": (body @ ort, 8),
        "oF": (face @ ort, 8),
        "oC": (base @ ort, 8),
        "hP": (hexa, 24),
        "hR": (rhombo, 12),
        "mP": (mono, 4),
        "mC": (base @ mono, 4),
        "aP": (np.diag([a, b, c]) + rng.normal(0, 0.5, (3, 3)), 2),
    }


def test_reduced_cells_satisfy_niggli_conditions_and_are_bases(random_lattices):
    cells = random_lattices(np.random.default_rng(0), 200)
    transform = niggli_transform(cells)
    assert transform.dtype == np.int64
    assert np.all(np.abs(np.rint(np.linalg.det(transform))) == 1)
    _assert_niggli(transform @ cells)


def test_reduced_cell_does_not_depend_on_the_basis_nor_the_orientation(
    random_lattices, random_unimodular
):
    rng = np.random.default_rng(1)
    cells = random_lattices(rng, 100)
    other = np.stack([random_unimodular(rng) @ cell for cell in cells])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    other = other @ q.T  # also rotated (q may be improper)
    ref = _parameters(niggli_transform(cells) @ cells)
    got = _parameters(niggli_transform(other) @ other)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * ref[:, 2].max())


def test_agrees_with_pymatgen(random_lattices):
    pytest.importorskip("pymatgen")
    from matgen.data.lattice import niggli_reduce

    cells = random_lattices(np.random.default_rng(2), 40)
    ours = _parameters(niggli_transform(cells) @ cells)
    theirs = _parameters(np.stack([niggli_reduce(cell)[0] for cell in cells]))
    # pymatgen maps the reduced parameters back onto the lattice with an angle tolerance, so its
    # cell can differ in the sign of a product that is near zero: compare magnitudes.
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-6, atol=1e-6)


def test_very_skewed_and_random_normal_cells_reduce():
    skewed = np.array([[[1.0, 0, 0], [1000.5, 1.0, 0], [3.3, -700.2, 1.0]]])
    _assert_niggli(niggli_transform(skewed) @ skewed)
    prior = np.random.default_rng(3).normal(size=(200, 3, 3))  # the lattice DDPM's prior
    _assert_niggli(niggli_transform(prior) @ prior, rel=1e-6)


@pytest.mark.parametrize("name", list(_bravais()))
def test_automorphism_groups_of_the_bravais_lattices(name, random_unimodular):
    cell, order = _bravais()[name]
    rng = np.random.default_rng(4)
    cell = random_unimodular(rng, steps=6) @ cell  # start from some other basis
    reduced = niggli_transform(cell) @ cell
    (group,) = lattice_automorphisms(reduced)
    assert len(group) == order
    gram = reduced[0] @ reduced[0].T
    for u in group:
        np.testing.assert_allclose(u @ gram @ u.T, gram, atol=1e-9)
    products = {tuple((u @ v).ravel()) for u in group for v in group}
    assert products == {tuple(u.ravel()) for u in group}  # closed: a group


def test_frames_are_bases_of_the_same_lattice(random_lattices):
    cells = random_lattices(np.random.default_rng(5), 6)
    cells = np.concatenate([cells, np.eye(3)[None] * 4.0])  # a cubic cell: 48 frames
    frames = canonical_frames(cells)
    counts = np.bincount(frames.system, minlength=len(cells))
    assert counts[:-1].tolist() == [2] * 6 and counts[-1] == 48
    assert np.all(np.diff(frames.system) >= 0)
    identity = np.broadcast_to(np.eye(3, dtype=np.int64), frames.transform.shape)
    np.testing.assert_array_equal(frames.transform @ frames.inverse, identity)
    framed = frames.transform.astype(np.float64) @ cells[frames.system]
    _assert_niggli(framed)  # the Niggli conditions depend on the Gram matrix only
    grams = framed @ framed.transpose(0, 2, 1)
    for b in range(len(cells)):
        g = grams[frames.system == b]
        np.testing.assert_allclose(g, np.broadcast_to(g[0], g.shape), atol=1e-9)
