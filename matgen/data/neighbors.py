"""Periodic and non-periodic neighbor lists through vesin (numpy) and vesin-torch (torch, any device).

Convention: an edge ``e`` goes from center ``i = edge_index[0, e]`` to neighbor
``j = edge_index[1, e]`` with integer image shift ``S = shifts[e]``, and its vector is

    r_ij = positions[j] - positions[i] + S @ cell        (Å, cell rows are lattice vectors)

Every pair within the cutoff is listed in both directions; an atom's own periodic images are
included (``i == j``, ``S != 0``), the zero-distance self pair never is. Cells that are small
compared with the cutoff (many images) and strongly skewed cells are handled by vesin.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

__all__ = ["edge_vectors", "neighbor_list"]


def neighbor_list(
    positions: np.ndarray | torch.Tensor,
    cell: np.ndarray | torch.Tensor,
    pbc: np.ndarray | torch.Tensor | bool,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """Neighbor list of one system.

    Args:
        positions: ``(n, 3)`` Cartesian positions, Å.
        cell: ``(3, 3)`` lattice vectors as rows, Å (ignored when no direction is periodic).
        pbc: periodicity, one bool or three.
        cutoff: radius, Å.

    Returns:
        ``edge_index`` ``(2, E)`` and integer image ``shifts`` ``(E, 3)``: numpy arrays for numpy
        input (vesin), int64 torch tensors on the input's device for torch input (vesin-torch).
        No gradient flows through these; compute vectors with :func:`edge_vectors`.
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if isinstance(positions, torch.Tensor):
        return _neighbor_list_torch(positions, torch.as_tensor(cell), pbc, cutoff)
    return _neighbor_list_numpy(np.asarray(positions), np.asarray(cell), pbc, cutoff)


def _periodic(pbc: np.ndarray | torch.Tensor | bool) -> list[bool]:
    flags = np.asarray(pbc.cpu() if isinstance(pbc, torch.Tensor) else pbc, dtype=bool).reshape(-1)
    return [bool(flags[0])] * 3 if flags.size == 1 else [bool(f) for f in flags]


_LOCAL = threading.local()
_THREADED_ABOVE = 2000  # atoms; below this, vesin's thread start-up costs more than it saves


def _calculator(cutoff: float, n_atoms: int):  # -> vesin.NeighborList
    """A vesin calculator per thread, cutoff and threading mode, reused across calls."""
    from vesin import NeighborList

    cache = _LOCAL.__dict__.setdefault("calculators", {})
    key = (cutoff, n_atoms > _THREADED_ABOVE)
    if key not in cache:
        cache[key] = NeighborList(cutoff=cutoff, full_list=True, n_threads=0 if key[1] else 1)
    return cache[key]


def _neighbor_list_numpy(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray | bool, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    periodic = _periodic(pbc)
    box = cell.astype(np.float64) if any(periodic) else np.zeros((3, 3))
    i, j, shifts = _calculator(float(cutoff), len(positions)).compute(
        positions.astype(np.float64), box, periodic, quantities="ijS"
    )
    return np.stack([i, j]).astype(np.int64), shifts.astype(np.int64)


def _neighbor_list_torch(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor | bool, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    from vesin_torch import NeighborList

    periodic = _periodic(pbc)
    points = positions.detach()
    box = cell.detach().to(points) if any(periodic) else torch.zeros(3, 3).to(points)
    i, j, shifts = NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points, box, torch.tensor(periodic, device=points.device), quantities="ijS"
    )
    return torch.stack([i, j]).long(), shifts.long()


def edge_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    batch: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
) -> torch.Tensor:
    """Edge vectors ``r_ij = x_j - x_i + S @ cell[system]`` ``(E, 3)``, differentiable in
    ``positions`` ``(N, 3)`` and ``cell`` ``(B, 3, 3)``; ``batch`` ``(N,)`` maps atoms to systems."""
    i, j = edge_index
    system = batch[i]
    shift = shifts.to(positions.dtype)
    # One lattice row at a time: (E, 3) temporaries instead of an (E, 3, 3) copy of the cells.
    offsets = sum(shift[:, k : k + 1] * cell[system, k] for k in range(3))
    return positions[j] - positions[i] + offsets
