"""Fully connected pairs within crystals, and the periodic Fourier features."""

from __future__ import annotations

import torch

from matgen.generators.crystal.cspnet import fully_connected_pairs
from matgen.generators.crystal.features import fractional_fourier_features, lattice_invariants


def test_fully_connected_pairs_are_all_pairs_of_each_crystal():
    sizes = [1, 4, 0, 3]
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    pairs = fully_connected_pairs(batch, len(sizes))
    expected = sorted(
        (i, j) for i in range(len(batch)) for j in range(len(batch)) if batch[i] == batch[j]
    )
    assert sorted(map(tuple, pairs.T.tolist())) == expected
    assert torch.all(pairs[0][1:] >= pairs[0][:-1])  # centers ascending
    assert fully_connected_pairs(torch.zeros(0, dtype=torch.long), 2).shape == (2, 0)


def test_fourier_features_are_periodic():
    delta = torch.rand(10, 3, dtype=torch.float64) * 2 - 1
    shift = torch.randint(-3, 4, (10, 3)).double()
    a, b = fractional_fourier_features(delta, 5), fractional_fourier_features(delta + shift, 5)
    assert a.shape == (10, 30)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_lattice_invariants():
    lattice = torch.diag(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64))[None]
    expected = torch.tensor([[2.0, 3.0, 4.0]], dtype=torch.float64).log()
    torch.testing.assert_close(lattice_invariants(lattice)[:, :3], expected)
    torch.testing.assert_close(
        lattice_invariants(lattice)[:, 3:], torch.zeros(1, 3, dtype=torch.float64)
    )
