"""Lattice utilities against ASE and pymatgen, in float64, batched and differentiable."""

from __future__ import annotations

import numpy as np
import torch
from ase.geometry import cellpar_to_cell
from pymatgen.core import Lattice

from matgen.data.lattice import (
    cart_to_frac,
    frac_to_cart,
    lattice_params_to_matrix,
    matrix_to_lattice_params,
    niggli_reduce,
    wrap_frac,
)


def test_params_to_matrix_equals_ase_and_inverts(mp20_test):
    cells = mp20_test.collection.cell[:500]
    lengths, angles = matrix_to_lattice_params(cells)
    for cell, a, b in zip(cells, lengths, angles, strict=True):
        reference = Lattice(cell)
        np.testing.assert_allclose(a, reference.abc, rtol=1e-12)
        np.testing.assert_allclose(b, reference.angles, rtol=1e-10)
    rebuilt = lattice_params_to_matrix(lengths, angles)
    expected = np.stack(
        [cellpar_to_cell(np.r_[a, b]) for a, b in zip(lengths, angles, strict=True)]
    )
    np.testing.assert_allclose(rebuilt, expected, atol=1e-10)
    # Same lattice: equal metric tensors G = M M^T.
    np.testing.assert_allclose(
        rebuilt @ rebuilt.transpose(0, 2, 1), cells @ cells.transpose(0, 2, 1), atol=1e-8
    )


def test_frac_cart_inverse_and_batched(mp20_test):
    batch_cells = torch.tensor(mp20_test.collection.cell[:8])
    frac = torch.rand(8, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cart = frac_to_cart(frac, batch_cells)
    torch.testing.assert_close(cart_to_frac(cart, batch_cells), frac, atol=1e-12, rtol=0)
    _, positions, cell, _ = mp20_test.collection.arrays(0)
    np.testing.assert_allclose(
        cart_to_frac(positions, cell), Lattice(cell).get_fractional_coords(positions), atol=1e-12
    )


def test_wrap_frac_lands_in_half_open_unit_interval():
    values = np.array([-1e-17, -0.25, 0.0, 0.999999999999, 1.0, 2.5, -3.0, 1 - 1e-17])
    wrapped = wrap_frac(values)
    assert (wrapped >= 0).all() and (wrapped < 1).all()
    np.testing.assert_allclose(
        wrapped, [0.0, 0.75, 0.0, 0.999999999999, 0.0, 0.5, 0.0, 0.0], atol=1e-15
    )
    assert isinstance(wrap_frac(torch.tensor(values)), torch.Tensor)


def test_niggli_reduction_gives_the_unique_niggli_cell(mp20_test):
    from ase.cell import Cell

    rng = np.random.default_rng(1)
    for i in rng.choice(len(mp20_test), 100, replace=False):
        _, positions, cell, _ = mp20_test.collection.arrays(int(i))
        skew = np.array([[1, 2, 0], [0, 1, -1], [1, 0, 1]])  # unimodular: the same lattice
        assert round(abs(np.linalg.det(skew))) == 1
        reduced, moved = niggli_reduce(skew @ cell, positions)
        ours = Lattice(reduced)
        theirs = Cell(cell).niggli_reduce(eps=1e-5)[0]  # ASE's independent implementation
        np.testing.assert_allclose(ours.abc, theirs.lengths(), rtol=1e-6)
        # Angles within the reduction tolerance of 90° may come out either side of it.
        cos = lambda angles: np.abs(np.cos(np.radians(angles)))  # noqa: E731
        np.testing.assert_allclose(cos(ours.angles), cos(theirs.angles()), atol=1e-4)
        assert abs(ours.volume - abs(np.linalg.det(cell))) < 1e-6
        frac = cart_to_frac(moved, reduced)
        assert (frac > -1e-9).all() and (frac < 1 + 1e-9).all()
        # Positions moved only by lattice vectors of the original cell.
        shift = cart_to_frac(moved - positions, cell)
        np.testing.assert_allclose(shift, np.round(shift), atol=1e-6)


def test_params_to_matrix_is_differentiable():
    lengths = torch.tensor([[3.0, 4.0, 5.0]], dtype=torch.float64, requires_grad=True)
    angles = torch.tensor([[80.0, 95.0, 110.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: torch.linalg.det(lattice_params_to_matrix(a, b)), (lengths, angles)
    )
