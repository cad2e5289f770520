"""Random lattices and changes of basis for the crystal-generator tests."""

from __future__ import annotations

import numpy as np
import pytest


def _random_unimodular(rng: np.random.Generator, steps: int = 4) -> np.ndarray:
    """An integer ``(3, 3)`` matrix with ``det = ±1`` and small entries: a product of row
    additions ``r_i += ±r_j``, swaps and sign flips."""
    out = np.eye(3, dtype=np.int64)
    for _ in range(steps):
        i, j = rng.choice(3, size=2, replace=False)
        kind = rng.integers(3)
        if kind == 0:
            out[i] += rng.choice([-1, 1]) * out[j]
        elif kind == 1:
            out[[i, j]] = out[[j, i]]
        else:
            out[i] *= -1
    assert round(abs(np.linalg.det(out))) == 1
    return out


def _random_lattices(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3, 3)`` skewed cells: a random near-orthogonal cell (3–7 Å) in a random
    non-reduced basis."""
    base = np.stack(
        [np.diag(rng.uniform(3.0, 7.0, 3)) + rng.normal(0.0, 0.8, (3, 3)) for _ in range(n)]
    )
    return np.stack([_random_unimodular(rng) @ cell for cell in base]).astype(np.float64)


@pytest.fixture
def random_unimodular():
    return _random_unimodular


@pytest.fixture
def random_lattices():
    return _random_lattices
