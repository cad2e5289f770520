"""``AtomsBatch``: the one batched container for crystals and molecules, mixed in any proportion.

All tensors of one batch live on one device; floating fields share one dtype.
``B`` systems, ``N`` atoms, ``E`` edges in the batch:

=================  ==========  =======  ========================================================
field              shape       dtype    meaning (units)
=================  ==========  =======  ========================================================
``positions``      (N, 3)      float    Cartesian positions (Å)
``numbers``        (N,)        int64    atomic numbers
``cell``           (B, 3, 3)   float    lattice vectors as rows (Å); any value where pbc is off
``pbc``            (B, 3)      bool     periodic directions (all False for a molecule)
``batch``          (N,)        int64    index of each atom's system
``n_atoms``        (B,)        int64    atoms per system
``edge_index``     (2, E)      int64    center ``i`` (row 0) and neighbor ``j`` (row 1), global
``shifts``         (E, 3)      int64    integer lattice image of ``j``:
                                        ``r_ij = x_j - x_i + shifts @ cell``
``cutoff``         float|None           radius the edges were built with (Å); None: no edges
``system_props``   (B, ...)             per-system targets, e.g. ``energy`` (B,) eV,
                                        ``stress`` (B, 3, 3) eV/Å^3 (ASE sign)
``atom_props``     (N, ...)             per-atom targets, e.g. ``forces`` (N, 3) eV/Å
``ids``            B strings            identifiers, used to name a system in errors
=================  ==========  =======  ========================================================

Fractional coordinates are derived (:attr:`AtomsBatch.frac_coords`), never stored, so positions
are the single source of truth. Build batches with :meth:`from_structures`,
:meth:`from_atoms`, :meth:`from_collection` or :meth:`collate` (a DataLoader ``collate_fn``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from matgen.data.convert import (
    arrays_to_atoms,
    arrays_to_structure,
    atoms_to_arrays,
    structure_to_arrays,
)
from matgen.data.errors import DataError
from matgen.data.neighbors import (
    BadSystemError,
    batched_neighbor_list,
    edge_vectors,
    neighbor_list,
)

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure

    from matgen.data.collection import AtomsCollection

__all__ = ["DEVICE_NEIGHBORS_ABOVE", "AtomsBatch"]

#: Systems larger than this (atoms) on an accelerator get their neighbour lists there (vesin-torch);
#: otherwise the whole batch goes through the host kernel, which is faster for many small cells.
DEVICE_NEIGHBORS_ABOVE = 5000


@dataclass
class AtomsBatch:
    """A batch of atomic systems; see the module docstring for every field."""

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    n_atoms: torch.Tensor
    edge_index: torch.Tensor | None = None
    shifts: torch.Tensor | None = None
    cutoff: float | None = None
    system_props: dict[str, torch.Tensor] = field(default_factory=dict)
    atom_props: dict[str, torch.Tensor] = field(default_factory=dict)
    ids: tuple[str, ...] = ()
    batch: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n_sys, n_tot = self.n_atoms.shape[0], self.positions.shape[0]
        if int(self.n_atoms.sum()) != n_tot or self.numbers.shape != (n_tot,):
            raise ValueError(
                f"n_atoms sums to {int(self.n_atoms.sum())} but positions hold {n_tot} atoms"
            )
        if self.cell.shape != (n_sys, 3, 3) or self.pbc.shape != (n_sys, 3):
            raise ValueError(
                f"cell {tuple(self.cell.shape)} / pbc {tuple(self.pbc.shape)} for {n_sys} systems"
            )
        if not self.ids:
            self.ids = tuple(str(i) for i in range(n_sys))
        self.batch = torch.repeat_interleave(
            torch.arange(n_sys, device=self.positions.device), self.n_atoms
        )

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Number of systems."""
        return int(self.n_atoms.shape[0])

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_edges(self) -> int:
        return 0 if self.edge_index is None else int(self.edge_index.shape[1])

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def atom_offsets(self) -> torch.Tensor:
        """``(B + 1,)`` first atom of each system, then the total."""
        return torch.cat([self.n_atoms.new_zeros(1), torch.cumsum(self.n_atoms, 0)])

    # ------------------------------------------------------------------ geometry
    @property
    def frac_coords(self) -> torch.Tensor:
        """Fractional coordinates ``(N, 3)``: ``positions = frac @ cell``, not wrapped. Systems
        with no periodic direction use the identity cell (their fractional coordinates are their
        positions in Å), so mixed batches never meet a singular cell."""
        eye = torch.eye(3, dtype=self.cell.dtype, device=self.device).expand_as(self.cell)
        cells = torch.where(self.pbc.any(dim=1)[:, None, None], self.cell, eye)
        cell = cells[self.batch]
        return torch.linalg.solve(cell.transpose(1, 2), self.positions.unsqueeze(-1)).squeeze(-1)

    @property
    def volume(self) -> torch.Tensor:
        """Cell volumes ``(B,)`` in Å^3 (absolute value of the determinant)."""
        return torch.linalg.det(self.cell).abs()

    def edge_vectors(self) -> torch.Tensor:
        """``(E, 3)`` vectors ``r_ij``, differentiable in positions and cell."""
        if self.edge_index is None or self.shifts is None:
            raise ValueError("this batch has no edges: call with_neighbors(cutoff) first")
        return edge_vectors(self.positions, self.cell, self.batch, self.edge_index, self.shifts)

    def with_neighbors(self, cutoff: float, *, method: str = "auto") -> AtomsBatch:
        """A copy with edges within ``cutoff`` Å.

        ``method="auto"``: all systems at once on the host
        (:func:`~matgen.data.neighbors.batched_neighbor_list`), or through vesin-torch on the
        batch's device, one system at a time, when a system on an accelerator has more than
        :data:`DEVICE_NEIGHBORS_ABOVE` atoms. ``method="vesin"``: vesin one system at a time
        (vesin-torch on an accelerator); the same edges, in another order.

        Raises:
            DataError: on the host path, naming the structure (its id) with non-finite positions
                or cell or a degenerate periodic cell.
        """
        if method not in ("auto", "vesin"):
            raise ValueError(f"method must be 'auto' or 'vesin', got {method!r}")
        n_atoms = self.n_atoms.cpu().numpy()
        pbc = self.pbc.cpu().numpy()
        positions = self.positions.detach()
        cell = self.cell.detach()
        if method == "vesin" and self.device.type == "cpu":
            positions, cell = positions.numpy(), cell.numpy()
        if method == "auto" and (
            self.device.type == "cpu" or int(n_atoms.max(initial=0)) <= DEVICE_NEIGHBORS_ABOVE
        ):
            try:
                e, sh = batched_neighbor_list(
                    positions.cpu().numpy(), cell.cpu().numpy(), pbc, n_atoms, cutoff
                )
            except BadSystemError as exc:  # its index within this batch: name the structure
                raise DataError(exc.reason, item=self.ids[exc.system]) from exc
            edge_index = torch.as_tensor(e, device=self.device)
            shift = torch.as_tensor(sh, device=self.device)
        else:
            offsets = self.atom_offsets.tolist()
            edges, shifts = [], []
            for s in range(len(self)):
                lo, hi = offsets[s], offsets[s + 1]
                e, sh = neighbor_list(positions[lo:hi], cell[s], pbc[s], cutoff)
                edges.append(torch.as_tensor(e + lo, device=self.device))
                shifts.append(torch.as_tensor(sh, device=self.device))
            edge_index = torch.cat(edges, 1) if edges else torch.zeros(2, 0, dtype=torch.long)
            shift = torch.cat(shifts, 0) if shifts else torch.zeros(0, 3, dtype=torch.long)
            edge_index, shift = edge_index.to(self.device), shift.to(self.device)
        return replace(
            self,
            edge_index=edge_index,
            shifts=shift,
            cutoff=float(cutoff),
            system_props=dict(self.system_props),
            atom_props=dict(self.atom_props),
        )

    def validate(self) -> None:
        """Raise :class:`DataError` naming the first system with non-finite positions or a
        degenerate periodic cell."""
        finite = torch.isfinite(self.positions).all(dim=1)
        if not bool(finite.all()):
            atom = int(torch.nonzero(~finite)[0])
            system = int(self.batch[atom])
            raise DataError(
                f"non-finite position for atom {atom - int(self.atom_offsets[system])}",
                item=self.ids[system],
            )
        periodic = self.pbc.any(dim=1)
        bad = periodic & (self.volume <= 1e-6)
        if bool(bad.any()):
            raise DataError(
                "degenerate cell (zero volume)", item=self.ids[int(torch.nonzero(bad)[0])]
            )

    # ------------------------------------------------------------------ device and dtype
    def _map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> AtomsBatch:
        """A copy with ``fn`` applied to every tensor field (``batch`` is rebuilt)."""
        opt = lambda t: None if t is None else fn(t)  # noqa: E731
        return replace(
            self,
            positions=fn(self.positions),
            numbers=fn(self.numbers),
            cell=fn(self.cell),
            pbc=fn(self.pbc),
            n_atoms=fn(self.n_atoms),
            edge_index=opt(self.edge_index),
            shifts=opt(self.shifts),
            system_props={k: fn(v) for k, v in self.system_props.items()},
            atom_props={k: fn(v) for k, v in self.atom_props.items()},
        )

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> AtomsBatch:
        """Move to ``device`` and cast floating fields to ``dtype``; integer fields keep theirs."""
        return self._map_tensors(
            lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        )

    def pin_memory(self) -> AtomsBatch:
        """Page-locked copy for asynchronous host-to-GPU transfer (DataLoader ``pin_memory``)."""
        return self._map_tensors(torch.Tensor.pin_memory)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        systems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        *,
        ids: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> AtomsBatch:
        """Batch ``(numbers, positions, cell, pbc)`` tuples (see :mod:`matgen.data.convert`)."""
        if not systems:
            raise ValueError("cannot batch zero systems")
        kw = {"device": device}
        return cls(
            positions=torch.as_tensor(np.concatenate([s[1] for s in systems]), dtype=dtype, **kw),
            numbers=torch.as_tensor(
                np.concatenate([s[0] for s in systems]), dtype=torch.long, **kw
            ),
            cell=torch.as_tensor(np.stack([s[2] for s in systems]), dtype=dtype, **kw),
            pbc=torch.as_tensor(
                np.stack([np.broadcast_to(s[3], 3) for s in systems]), dtype=torch.bool, **kw
            ),
            n_atoms=torch.as_tensor([len(s[0]) for s in systems], dtype=torch.long, **kw),
            ids=tuple(ids) if ids is not None else (),
        )

    @classmethod
    def from_structures(
        cls,
        structures: Sequence[Structure],
        *,
        ids: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> AtomsBatch:
        """Batch pymatgen ``Structure`` objects (ordered sites only)."""
        names = list(ids) if ids is not None else [str(i) for i in range(len(structures))]
        systems = [structure_to_arrays(s, item=n) for s, n in zip(structures, names, strict=True)]
        return cls.from_arrays(systems, ids=names, dtype=dtype, device=device)

    @classmethod
    def from_atoms(
        cls,
        atoms_list: Sequence[Atoms],
        *,
        ids: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> AtomsBatch:
        """Batch ASE ``Atoms`` (periodic, partly periodic or molecules)."""
        names = list(ids) if ids is not None else [str(i) for i in range(len(atoms_list))]
        systems = [atoms_to_arrays(a, item=n) for a, n in zip(atoms_list, names, strict=True)]
        return cls.from_arrays(systems, ids=names, dtype=dtype, device=device)

    @classmethod
    def from_collection(
        cls,
        collection: AtomsCollection,
        index: Sequence[int] | None = None,
        *,
        id_column: str | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> AtomsBatch:
        """Batch systems ``index`` (default: all) of a collection with their targets: per-system
        ``system_arrays`` and numeric property columns (``band_gap``, …) in ``system_props``,
        ``atom_arrays`` in ``atom_props``."""
        index = list(range(len(collection))) if index is None else list(index)
        sub = collection.subset(index)
        ids = (
            sub.properties[id_column].astype(str).tolist() if id_column else [str(i) for i in index]
        )
        out = cls(
            positions=torch.as_tensor(sub.positions, dtype=dtype, device=device),
            numbers=torch.as_tensor(sub.numbers, dtype=torch.long, device=device),
            cell=torch.as_tensor(sub.cell, dtype=dtype, device=device),
            pbc=torch.as_tensor(sub.pbc, device=device),
            n_atoms=torch.as_tensor(sub.n_atoms, dtype=torch.long, device=device),
            ids=tuple(ids),
        )
        numeric = {
            c: sub.properties[c].to_numpy(np.float64)
            for c in sub.properties.columns
            if sub.properties[c].dtype.kind in "iuf" and c not in sub.system_arrays
        }
        out.system_props = {
            k: torch.as_tensor(v, dtype=dtype, device=device)
            for k, v in (sub.system_arrays | numeric).items()
        }
        out.atom_props = {
            k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in sub.atom_arrays.items()
        }
        return out

    @classmethod
    def collate(cls, items: Sequence[AtomsBatch]) -> AtomsBatch:
        """Concatenate batches (e.g. single systems from a Dataset) into one; edges are kept
        when every item has them with the same cutoff. Usable as a DataLoader ``collate_fn``."""
        if not items:
            raise ValueError("cannot collate zero batches")
        first = items[0]
        has_edges = (
            all(b.edge_index is not None for b in items) and len({b.cutoff for b in items}) == 1
        )
        edge_index = shifts = None
        if has_edges:
            starts = np.cumsum([0] + [b.num_atoms for b in items[:-1]])
            edge_index = torch.cat(
                [b.edge_index + int(o) for b, o in zip(items, starts, strict=True)], 1
            )
            shifts = torch.cat([b.shifts for b in items], 0)
        common_sys = set.intersection(*(set(b.system_props) for b in items))
        common_atom = set.intersection(*(set(b.atom_props) for b in items))
        return cls(
            positions=torch.cat([b.positions for b in items]),
            numbers=torch.cat([b.numbers for b in items]),
            cell=torch.cat([b.cell for b in items]),
            pbc=torch.cat([b.pbc for b in items]),
            n_atoms=torch.cat([b.n_atoms for b in items]),
            edge_index=edge_index,
            shifts=shifts,
            cutoff=first.cutoff if has_edges else None,
            system_props={
                k: torch.cat([b.system_props[k] for b in items]) for k in sorted(common_sys)
            },
            atom_props={
                k: torch.cat([b.atom_props[k] for b in items]) for k in sorted(common_atom)
            },
            ids=_unique_ids([i for b in items for i in b.ids]),
        )

    # ------------------------------------------------------------------ back out
    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(numbers, positions, cell, pbc)`` of system ``i`` as float64 numpy arrays."""
        lo, hi = (int(x) for x in self.atom_offsets[i : i + 2])
        return (
            self.numbers[lo:hi].cpu().numpy(),
            self.positions[lo:hi].detach().cpu().double().numpy(),
            self.cell[i].detach().cpu().double().numpy(),
            self.pbc[i].cpu().numpy(),
        )

    def to_structures(self) -> list[Structure]:
        """Every system as a pymatgen ``Structure``."""
        return [arrays_to_structure(*self.arrays(i)) for i in range(len(self))]

    def to_atoms(self) -> list[Atoms]:
        """Every system as an ASE ``Atoms``."""
        return [arrays_to_atoms(*self.arrays(i)) for i in range(len(self))]

    def split(self) -> list[AtomsBatch]:
        """One single-system batch per system (edges and targets kept)."""
        edge_sys = self._edge_systems()
        return [self.systems(s, s + 1, _edge_sys=edge_sys) for s in range(len(self))]

    def _edge_systems(self) -> torch.Tensor | None:
        """The system of every edge (``None`` without edges)."""
        return None if self.edge_index is None else self.batch[self.edge_index[0]]

    def systems(
        self, start: int, stop: int, *, _edge_sys: torch.Tensor | None = None
    ) -> AtomsBatch:
        """The batch of systems ``start .. stop - 1`` (edges and targets kept)."""
        offsets = self.atom_offsets
        lo, hi = int(offsets[start]), int(offsets[stop])
        edge_index = shifts = None
        if self.edge_index is not None:
            edge_sys = self._edge_systems() if _edge_sys is None else _edge_sys
            mask = (edge_sys >= start) & (edge_sys < stop)
            edge_index, shifts = self.edge_index[:, mask] - lo, self.shifts[mask]
        return AtomsBatch(
            positions=self.positions[lo:hi],
            numbers=self.numbers[lo:hi],
            cell=self.cell[start:stop],
            pbc=self.pbc[start:stop],
            n_atoms=self.n_atoms[start:stop],
            edge_index=edge_index,
            shifts=shifts,
            cutoff=self.cutoff,
            system_props={k: v[start:stop] for k, v in self.system_props.items()},
            atom_props={k: v[lo:hi] for k, v in self.atom_props.items()},
            ids=self.ids[start:stop],
        )

    def chunks(self, parts: int) -> list[AtomsBatch]:
        """At most ``parts`` batches of consecutive systems with about equal numbers of atoms,
        in order (none empty); concatenating their per-system or per-atom outputs gives this
        batch's."""
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts}")
        n_sys = len(self)
        if n_sys == 0:
            return [self]
        ends = torch.cumsum(self.n_atoms, 0).cpu().numpy()
        targets = ends[-1] * np.arange(1, parts) / parts
        # each boundary after the system whose end is closest to its target, at least one each
        cuts = np.abs(ends[None, :-1] - targets[:, None]).argmin(axis=1) + 1 if n_sys > 1 else []
        bounds = sorted({0, n_sys, *(int(c) for c in cuts)})
        edge_sys = self._edge_systems()
        return [self.systems(a, b, _edge_sys=edge_sys) for a, b in itertools.pairwise(bounds)]


def _unique_ids(ids: list[str]) -> tuple[str, ...]:
    """``ids`` with repeats made distinct by their position (``0@3``), so errors name one system."""
    if len(set(ids)) == len(ids):
        return tuple(ids)
    seen: dict[str, int] = {}
    for name in ids:
        seen[name] = seen.get(name, 0) + 1
    return tuple(f"{name}@{k}" if seen[name] > 1 else name for k, name in enumerate(ids))
