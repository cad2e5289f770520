"""Periodic and non-periodic neighbor lists: one system through vesin (numpy) or vesin-torch (torch,
any device); many systems at once through :func:`batched_neighbor_list`, a compiled kernel (numba)
that enumerates every pair's images exactly.

Why a kernel of our own beside vesin: for many small cells (MP-20 at 6 Å, ~560 edges per
structure) vesin, one call per system, runs at the speed of pymatgen's ``get_neighbor_list``
(0.8x in ``benchmarks/bench_data.py``), while one batched call runs 7x faster than pymatgen on
one thread. The kernel is checked against both libraries on real data
(``tests/data/test_batched_neighbors.py``); large sparse systems still go to vesin's cell list.

Convention: an edge ``e`` goes from center ``i = edge_index[0, e]`` to neighbor
``j = edge_index[1, e]`` with integer image shift ``S = shifts[e]``, and its vector is

    r_ij = positions[j] - positions[i] + S @ cell        (Å, cell rows are lattice vectors)

Every pair within the cutoff is listed in both directions; an atom's own periodic images are
included (``i == j``, ``S != 0``), the zero-distance self pair never is. Cells that are small
compared with the cutoff (many images) and strongly skewed cells are handled by vesin.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from matgen.data.threads import thread_pool

__all__ = ["BadSystemError", "batched_neighbor_list", "edge_vectors", "neighbor_list"]


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


#: Systems up to this many atoms always go through the kernel (all ordered pairs are visited).
KERNEL_MAX_ATOMS = 256
#: Larger fully periodic systems go through the kernel when the cutoff sphere fills at least this
#: fraction of the cell (then at most ~1/fraction pairs are visited per edge); otherwise through
#: vesin's cell list, one system at a time.
KERNEL_MIN_FILL = 0.1
_PARALLEL_PAIRS = 20_000  # below this many atom pairs in a call, threads cost more than they save
# The threaded path counts, then writes (two passes); one thread writes in one pass and is as fast
# as two threads on two cores (MP-20 test split at 6 Å: 0.12 s either way).
_PARALLEL_THREADS = 3


class BadSystemError(ValueError):
    """A system of a :func:`batched_neighbor_list` call that cannot be listed: ``system`` is its
    index in the call, ``reason`` what is wrong (a caller that knows the systems' ids names it)."""

    def __init__(self, system: int, reason: str) -> None:
        self.system, self.reason = system, reason
        super().__init__(f"system {system}: {reason}")


def batched_neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    n_atoms: np.ndarray,
    cutoff: float,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbor lists of many systems at once, with the conventions of :func:`neighbor_list`.

    Args:
        positions: ``(N, 3)`` Cartesian positions of all atoms, system after system, Å; they need
            not be wrapped into the cell.
        cell: ``(B, 3, 3)`` lattice vectors as rows, Å (any value in non-periodic directions).
        pbc: ``(B, 3)`` periodic directions.
        n_atoms: ``(B,)`` atoms per system.
        cutoff: radius, Å.
        threads: worker threads (default: ``torch.get_num_threads()``).

    Returns:
        ``edge_index`` ``(2, E)`` int64 in global atom indices and ``shifts`` ``(E, 3)`` int64,
        edges grouped by system in system order; edges ``2k`` and ``2k + 1`` are each other's
        reverse, ``(i, j, S)`` and ``(j, i, -S)``.

    Raises:
        BadSystemError: naming the system (its index in ``n_atoms``), for non-finite positions
            or cells and degenerate periodic cells.
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(cell, dtype=np.float64).reshape(-1, 3, 3)
    n_atoms = np.asarray(n_atoms, dtype=np.int64).reshape(-1)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (len(n_atoms), 3))
    if len(cell) != len(n_atoms) or int(n_atoms.sum()) != len(positions) or (n_atoms < 0).any():
        raise ValueError(
            f"inconsistent shapes: {len(positions)} positions, {len(cell)} cells, "
            f"n_atoms summing to {int(n_atoms.sum())} over {len(n_atoms)} systems"
        )
    offsets = np.zeros(len(n_atoms) + 1, dtype=np.int64)
    np.cumsum(n_atoms, out=offsets[1:])
    batch = np.repeat(np.arange(len(n_atoms)), n_atoms)
    bad = ~np.isfinite(positions).all(1)
    if bad.any():
        raise BadSystemError(int(batch[np.argmax(bad)]), "non-finite positions")
    bad = pbc.any(1) & ~np.isfinite(cell).all((1, 2))
    if bad.any():
        raise BadSystemError(int(np.argmax(bad)), "non-finite cell")
    rotations, frames = _triangular_frames(cell, pbc)
    rotated = np.einsum("nk,nkl->nl", positions, rotations[batch])

    volume = np.abs(np.linalg.det(np.where(pbc.all(1)[:, None, None], cell, np.eye(3))))
    fill = np.where(pbc.all(1), 4.0 / 3.0 * math.pi * cutoff**3 / np.maximum(volume, 1e-300), 0.0)
    kernel = (n_atoms <= KERNEL_MAX_ATOMS) | (fill >= KERNEL_MIN_FILL)
    systems = np.flatnonzero(kernel & (n_atoms > 0))
    edge_index, shifts = _run_kernel(
        rotated, frames, pbc, offsets, systems, float(cutoff), n_atoms, volume, threads
    )
    others = np.flatnonzero(~kernel)
    if len(others) == 0:
        return edge_index, shifts
    parts_e, parts_s = [edge_index], [shifts]
    for b in others:
        lo, hi = offsets[b], offsets[b + 1]
        e, sh = _neighbor_list_numpy(positions[lo:hi], cell[b], pbc[b], cutoff)
        parts_e.append(e + lo)
        parts_s.append(sh)
    edge_index, shifts = np.concatenate(parts_e, 1), np.concatenate(parts_s, 0)
    order = np.argsort(batch[edge_index[0]], kind="stable")
    return np.ascontiguousarray(edge_index[:, order]), np.ascontiguousarray(shifts[order])


def _triangular_frames(cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per system an orthogonal ``rotation`` (3, 3) and lower-triangular ``frame`` (3, 3) with
    positive diagonal such that ``lattice @ rotation == frame``; non-periodic lattice rows are
    replaced by an orthonormal completion of the periodic ones (they never shift atoms)."""
    lattice = cell.copy()
    lattice[~pbc.any(1)] = np.eye(3)
    for b in np.flatnonzero(pbc.any(1) & ~pbc.all(1)):
        rows = cell[b][pbc[b]]
        _, _, vh = np.linalg.svd(rows, full_matrices=True)
        lattice[b][~pbc[b]] = vh[len(rows) :]
    q, r = np.linalg.qr(np.swapaxes(lattice, 1, 2))
    sign = np.sign(np.diagonal(r, axis1=1, axis2=2))
    sign[sign == 0] = 1.0
    rotations = q * sign[:, None, :]
    frames = np.swapaxes(r * sign[:, :, None], 1, 2)
    heights = np.diagonal(frames, axis1=1, axis2=2)
    bad = (pbc & (heights <= 1e-6)).any(1)
    if bad.any():
        raise BadSystemError(
            int(np.argmax(bad)),
            "degenerate periodic cell (lattice vectors are linearly dependent or of zero length)",
        )
    return np.ascontiguousarray(rotations), np.ascontiguousarray(frames)


def _run_kernel(
    rotated: np.ndarray,
    frames: np.ndarray,
    pbc: np.ndarray,
    offsets: np.ndarray,
    systems: np.ndarray,
    cutoff: float,
    n_atoms: np.ndarray,
    volume: np.ndarray,
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    from matgen.data._nl_kernel import count_edges, write_edges

    pairs = n_atoms[systems] ** 2
    workers = max(1, threads or torch.get_num_threads())
    if workers < _PARALLEL_THREADS or int(pairs.sum()) < _PARALLEL_PAIRS:
        return _collect(rotated, frames, pbc, offsets, systems, cutoff, volume)
    # contiguous chunks of systems with about equal numbers of pairs; count, then write
    bounds = np.searchsorted(np.cumsum(pairs), np.linspace(0, pairs.sum(), workers + 1)[1:-1])
    chunks = [c for c in np.split(systems, bounds) if len(c)]
    counts = [np.zeros(len(c), dtype=np.int64) for c in chunks]
    args = (rotated, frames, pbc, offsets)
    pool = thread_pool(len(chunks))
    list(pool.map(lambda k: count_edges(*args, chunks[k], cutoff, counts[k]), range(len(chunks))))
    sizes = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    starts = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    edge_index = np.empty((2, int(starts[-1])), dtype=np.int64)
    shifts = np.empty((int(starts[-1]), 3), dtype=np.int64)
    first = np.cumsum([0] + [len(c) for c in chunks])

    def write(k: int) -> None:
        write_edges(
            *args,
            chunks[k],
            cutoff,
            starts[first[k] : first[k + 1]],
            edge_index[0],
            edge_index[1],
            shifts,
        )

    list(pool.map(write, range(len(chunks))))
    return edge_index, shifts


def _collect(
    rotated: np.ndarray,
    frames: np.ndarray,
    pbc: np.ndarray,
    offsets: np.ndarray,
    systems: np.ndarray,
    cutoff: float,
    volume: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One thread, one pass: buffers sized by the expected number of edges (a pair of a fully
    periodic system has on average ``sphere / volume`` images), with per-system upper bounds
    (at most ``floor(2 cutoff / height) + 2`` images along each periodic axis) as a guard."""
    from matgen.data._nl_kernel import collect_edges

    n = offsets[systems + 1] - offsets[systems]
    heights = np.diagonal(frames[systems], axis1=1, axis2=2)
    per_axis = np.where(pbc[systems], np.floor(2 * cutoff / heights) + 2, 1.0)
    bounds = n * n * per_axis.prod(1)
    full = pbc[systems].all(1)
    expected = np.where(full, n * n * (4 / 3 * math.pi * cutoff**3) / volume[systems], bounds)
    capacity = int(1.25 * expected.sum() + bounds.max(initial=0)) + 16
    ij, shifts, count = collect_edges(
        rotated, frames, pbc, offsets, systems, cutoff, bounds.astype(np.int64), capacity
    )
    return ij[: 2 * count].reshape(2, count), shifts[:count]


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
