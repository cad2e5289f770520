"""Batched FIRE relaxation of many structures at once, with ASE's FrechetCellFilter cell semantics.

Every structure keeps its own FIRE state (velocity, time step, mixing ``a``, step counter) with
ASE's parameters and update rule (``ase.optimize.FIRE``: ``dt = 0.1``, ``maxstep = 0.2`` Å,
``dtmax = 1``, ``Nmin = 5``, ``finc = 1.1``, ``fdec = 0.5``, ``astart = fa·… = 0.1``,
``fa = 0.99``). The states of all structures in flight are packed into tensors (atoms
concatenated, one row per structure for the cell and the scalars), so one step of the whole
batch is a fixed number of tensor operations, whatever the number of structures, and the host
reads back three numbers per structure per step. With ``relax_cell`` the degrees of freedom are
those of ``ase.filters.FrechetCellFilter``: positions in the undeformed cell, ``u = x F^-T``,
and ``n_atoms · log F`` for the deformation gradient ``F`` (``cell = cell0 F^T``); the
generalised forces are ``f F`` on the atoms and ``D exp(log F)^*[σ_v F^-T] / n_atoms`` on the
cell, with the virial ``σ_v = -V σ`` and the adjoint Fréchet derivative of the matrix
exponential taken by autograd. A structure has converged when the largest row norm of its
generalised forces (atoms and cell) is at most ``fmax``, checked before each step as ASE does.

Per structure ``b`` with generalised force ``f`` and velocity ``v`` (atoms and cell rows), a
step is ASE's: if ``f·v > 0``, ``v ← (1 - a) v + a |v| f / |f|`` and, after ``Nmin`` such steps
in a row, ``dt ← min(finc dt, dtmax)``, ``a ← fa a``; otherwise ``v ← 0``, ``a ← astart``,
``dt ← fdec dt``; then ``v ← v + dt f``, ``Δ = dt v`` scaled down to norm ``maxstep`` if
longer. Structures without a relaxing cell carry zero cell rows, which change none of the sums.

Continuous batching: converged (or failed) structures leave the batch and waiting ones enter,
keeping at most ``max_atoms`` atoms in flight. On a CPU with several threads, the batch is
evaluated in parts side by side, one thread each
(:func:`matgen.mlff.potential.evaluate_threaded`). A structure whose energy or forces become
non-finite or absurd is stopped and flagged; it never affects the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from ase import Atoms

from matgen.data.allocator import reuse_freed_memory
from matgen.data.batch import AtomsBatch
from matgen.data.errors import DataError
from matgen.mlff.potential import evaluate_threaded

__all__ = ["FIREParameters", "RelaxResult", "relax_batched"]

#: Forces (eV/Å) or energies per atom (eV) beyond these mark a relaxation as exploded.
EXPLODED_FORCE = 1e4
EXPLODED_ENERGY = 1e4


@dataclass(frozen=True)
class FIREParameters:
    """ASE's FIRE defaults."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    n_min: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


@dataclass
class RelaxResult:
    """Outcome of one structure: ``status`` is ``converged``, ``max_steps`` or ``failed``."""

    atoms: Atoms
    energy: float
    fmax: float
    steps: int
    status: str
    message: str = ""

    @property
    def converged(self) -> bool:
        return self.status == "converged"


@dataclass
class _Packed:
    """FIRE states of the structures in flight: atoms concatenated (``N`` rows), one row per
    structure (``B`` rows) for cells, cell velocities and scalars. ``index`` and ``sizes`` are
    host copies (input index and atom count of each structure)."""

    index: list[int]
    sizes: list[int]
    numbers: torch.Tensor  # (N,)
    system: torch.Tensor  # (N,) structure of each atom, 0..B-1
    n_atoms: torch.Tensor  # (B,)
    pbc: torch.Tensor  # (B, 3)
    has_cell: torch.Tensor  # (B,) the cell relaxes
    cell0: torch.Tensor  # (B, 3, 3)
    u: torch.Tensor  # (N, 3) positions in the undeformed cell
    log_f: torch.Tensor  # (B, 3, 3) n_atoms * log F (zero for a fixed cell)
    vel: torch.Tensor  # (N, 3)
    vel_cell: torch.Tensor  # (B, 3, 3)
    dt: torch.Tensor  # (B,)
    a: torch.Tensor  # (B,)
    n_pos: torch.Tensor  # (B,) consecutive steps with f·v > 0
    steps: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return len(self.index)

    def select(self, keep: Sequence[bool]) -> _Packed:
        """The structures flagged in ``keep``, in order."""
        k_sys = torch.tensor(list(keep), device=self.numbers.device, dtype=torch.bool)
        k_atom = k_sys[self.system]
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("index", "sizes"):
                values[f.name] = [x for x, k in zip(value, keep, strict=True) if k]
            elif f.name == "system":
                values[f.name] = (torch.cumsum(k_sys.long(), 0) - 1)[value[k_atom]]
            else:
                values[f.name] = value[k_atom if f.name in _ATOM_FIELDS else k_sys]
        return _Packed(**values)

    def extend(self, other: _Packed) -> _Packed:
        """These structures followed by ``other``'s."""
        values = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("index", "sizes"):
                values[f.name] = mine + theirs
            elif f.name == "system":
                values[f.name] = torch.cat([mine, theirs + len(self)])
            else:
                values[f.name] = torch.cat([mine, theirs])
        return _Packed(**values)


_ATOM_FIELDS = frozenset({"numbers", "u", "vel"})


def relax_batched(
    model: torch.nn.Module,
    structures: Sequence[Atoms],
    *,
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    max_atoms: int = 2048,
    params: FIREParameters | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    on_result: Callable[[int, RelaxResult], None] | None = None,
    threads: int | None = None,
) -> list[RelaxResult]:
    """Relax ``structures`` with ``model`` (``model(batch) -> energy, forces, stress``).

    Args:
        fmax: convergence threshold on atomic and cell forces (eV/Å).
        max_steps: FIRE steps per structure before giving up.
        relax_cell: optimise the cell of periodic structures (FrechetCellFilter semantics).
        max_atoms: atoms evaluated together at most (the memory budget).
        on_result: called with ``(index, result)`` as each structure finishes (for streaming
            results into a store).
        threads: CPU threads that evaluate parts of the batch side by side, one part each
            (default ``torch.get_num_threads()``; ``1``: one call with the operations' own
            threading). Results do not depend on it beyond rounding.

    On the CPU, freed memory is kept for reuse while it runs
    (:func:`~matgen.data.allocator.reuse_freed_memory`: no page faults for each step's
    temporaries) and returned when it ends.

    Returns:
        One :class:`RelaxResult` per input, in input order.
    """
    params = params or FIREParameters()
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype).eval()
    results: list[RelaxResult | None] = [None] * len(structures)
    waiting = list(range(len(structures)))[::-1]
    active: _Packed | None = None

    def record(i: int, result: RelaxResult) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    # many steps of the same large temporaries: keep freed memory instead of faulting it in anew
    with reuse_freed_memory(device.type == "cpu"):
        while waiting or active is not None:
            in_flight = sum(active.sizes) if active is not None else 0
            entering = []
            while waiting and (
                (active is None and not entering)
                or len(structures[waiting[-1]]) <= max_atoms - in_flight
            ):
                i = waiting.pop()
                problem = _problem(structures[i])
                if problem:
                    record(
                        i, RelaxResult(structures[i].copy(), np.nan, np.nan, 0, "failed", problem)
                    )
                    continue
                entering.append(i)
                in_flight += len(structures[i])
            if entering:
                new = _pack(entering, structures, params, device, dtype, relax_cell)
                active = new if active is None else active.extend(new)
            if active is None:
                continue
            try:
                energy, fmax_now, gen_forces, positions, cells = _evaluate(model, active, threads)
            except DataError as exc:  # one bad structure: evaluate the rest without it
                bad = _blame(exc, active)
                i = active.index[bad]
                record(i, RelaxResult(structures[i].copy(), np.nan, np.nan, 0, "failed", str(exc)))
                active = _without(active, bad)
                continue
            host = torch.stack([energy.double(), fmax_now.double(), active.steps.double()]).cpu()
            energies, forces_max, steps = host.numpy()
            keep, leaving = [], []
            for b, (e, f, s) in enumerate(zip(energies, forces_max, steps, strict=True)):
                n = active.sizes[b]
                if (
                    not (np.isfinite(e) and np.isfinite(f))
                    or f > EXPLODED_FORCE
                    or abs(e) / n > EXPLODED_ENERGY
                ):
                    status = "failed"
                elif f <= fmax:
                    status = "converged"
                elif s >= max_steps:
                    status = "max_steps"
                else:
                    keep.append(True)
                    continue
                keep.append(False)
                leaving.append((b, status, float(e), float(f), int(s)))
            if leaving:
                _finish(active, leaving, positions, cells, record)
            if not any(keep):
                active = None
                continue
            atom_force, cell_force = gen_forces
            if not all(keep):
                k_sys = torch.tensor(keep, device=device)
                atom_force, cell_force = atom_force[k_sys[active.system]], cell_force[k_sys]
                active = active.select(keep)
            _fire_step(active, atom_force, cell_force, params)
    return [r for r in results if r is not None]


def _problem(atoms: Atoms) -> str:
    """Why ``atoms`` cannot be relaxed, or ``""``."""
    if len(atoms) == 0:
        return "structure has no atoms"
    if not np.isfinite(atoms.positions).all():
        return "non-finite positions"
    return ""


def _pack(
    indices: list[int],
    structures: Sequence[Atoms],
    params: FIREParameters,
    device: torch.device,
    dtype: torch.dtype,
    relax_cell: bool,
) -> _Packed:
    """Fresh FIRE states (zero velocities, ``dt``, ``astart``) of ``structures[indices]``."""
    chosen = [structures[i] for i in indices]
    sizes = [len(a) for a in chosen]
    kw = {"device": device, "dtype": dtype}
    b = len(chosen)
    n = sum(sizes)
    return _Packed(
        index=list(indices),
        sizes=sizes,
        numbers=torch.as_tensor(np.concatenate([a.numbers for a in chosen]), device=device),
        system=torch.repeat_interleave(
            torch.arange(b, device=device), torch.tensor(sizes, device=device)
        ),
        n_atoms=torch.tensor(sizes, device=device),
        pbc=torch.as_tensor(np.array([a.pbc for a in chosen]), device=device),
        has_cell=torch.tensor([relax_cell and bool(a.pbc.all()) for a in chosen], device=device),
        cell0=torch.as_tensor(np.array([a.cell.array for a in chosen]), **kw),
        u=torch.as_tensor(np.concatenate([a.positions for a in chosen]), **kw),
        log_f=torch.zeros(b, 3, 3, **kw),
        vel=torch.zeros(n, 3, **kw),
        vel_cell=torch.zeros(b, 3, 3, **kw),
        dt=torch.full((b,), params.dt, **kw),
        a=torch.full((b,), params.astart, **kw),
        n_pos=torch.zeros(b, dtype=torch.long, device=device),
        steps=torch.zeros(b, dtype=torch.long, device=device),
    )


def _segment_sum(values: torch.Tensor, system: torch.Tensor, n: int) -> torch.Tensor:
    """Per-structure sums of per-atom ``values`` ``(N,)`` -> ``(n,)``."""
    return values.new_zeros(n).index_add_(0, system, values)


def _evaluate(
    model: torch.nn.Module, state: _Packed, threads: int | None
) -> tuple[torch.Tensor, ...]:
    """Energies ``(B,)``, largest generalised-force row norms ``(B,)``, generalised forces on
    the atoms ``(N, 3)`` and on the cells ``(B, 3, 3)``, and the evaluated positions and cells."""
    n = state.n_atoms.to(state.u.dtype)
    logs = (state.log_f / n[:, None, None]).detach().requires_grad_(True)
    with torch.enable_grad():
        deform = torch.linalg.matrix_exp(logs)  # identity where the cell is fixed
    f = deform.detach()
    f_atom = f[state.system]
    positions = torch.bmm(state.u[:, None, :], f_atom.transpose(1, 2))[:, 0]
    cells = torch.bmm(state.cell0, f.transpose(1, 2))
    batch = AtomsBatch(
        positions=positions,
        numbers=state.numbers,
        cell=cells,
        pbc=state.pbc,
        n_atoms=state.n_atoms,
        ids=tuple(str(i) for i in state.index),
    )
    with_cell = bool(state.has_cell.any())
    out = evaluate_threaded(model, batch, threads=threads, forces=True, stress=with_cell)
    energy = out["energy"].detach()
    atom_force = torch.bmm(out["forces"].detach()[:, None, :], f_atom)[:, 0]  # f F
    if with_cell:
        volume = torch.linalg.det(cells).abs()
        virial = -volume[:, None, None] * out["stress"].detach()
        cell_grad = virial @ torch.linalg.inv(f.transpose(1, 2))
        (grad,) = torch.autograd.grad(deform, logs, grad_outputs=cell_grad)
        cell_force = torch.where(state.has_cell[:, None, None], grad / n[:, None, None], 0.0)
    else:
        cell_force = torch.zeros_like(state.log_f)
    row_max = torch.zeros_like(energy).scatter_reduce_(
        0, state.system, torch.linalg.vector_norm(atom_force, dim=1), "amax"
    )
    row_max = torch.maximum(row_max, torch.linalg.vector_norm(cell_force, dim=2).amax(dim=1))
    return energy, row_max, (atom_force, cell_force), positions.detach(), cells


def _fire_step(
    s: _Packed, atom_force: torch.Tensor, cell_force: torch.Tensor, p: FIREParameters
) -> None:
    """One ASE FIRE step of every structure in ``s``, in place."""
    b, sys = len(s), s.system

    def total(atom: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:  # per-structure sums
        return _segment_sum(atom.sum(dim=1), sys, b) + cell.sum(dim=(1, 2))

    started = s.steps > 0
    vf = total(atom_force * s.vel, cell_force * s.vel_cell)
    uphill = started & (vf > 0.0)
    downhill = started & ~(vf > 0.0)
    f_norm = total(atom_force**2, cell_force**2).sqrt()
    v_norm = total(s.vel**2, s.vel_cell**2).sqrt()
    mix = torch.where(uphill, s.a * v_norm / f_norm.clamp_min(1e-300), 0.0)
    keep = torch.where(uphill, 1.0 - s.a, 1.0)
    keep = torch.where(downhill, 0.0, keep)
    s.vel = keep[sys, None] * s.vel + mix[sys, None] * atom_force
    s.vel_cell = keep[:, None, None] * s.vel_cell + mix[:, None, None] * cell_force
    grow = uphill & (s.n_pos > p.n_min)
    s.dt = torch.where(grow, (s.dt * p.finc).clamp_max(p.dtmax), s.dt)
    s.a = torch.where(grow, s.a * p.fa, s.a)
    s.n_pos = torch.where(uphill, s.n_pos + 1, s.n_pos)
    s.a = torch.where(downhill, torch.full_like(s.a, p.astart), s.a)
    s.dt = torch.where(downhill, s.dt * p.fdec, s.dt)
    s.n_pos = torch.where(downhill, torch.zeros_like(s.n_pos), s.n_pos)
    s.vel = s.vel + s.dt[sys, None] * atom_force
    s.vel_cell = s.vel_cell + s.dt[:, None, None] * cell_force
    dr, dr_cell = s.dt[sys, None] * s.vel, s.dt[:, None, None] * s.vel_cell
    norm = total(dr**2, dr_cell**2).sqrt()
    scale = torch.where(norm > p.maxstep, p.maxstep / norm.clamp_min(1e-300), 1.0)
    s.u = s.u + scale[sys, None] * dr
    s.log_f = s.log_f + scale[:, None, None] * dr_cell
    s.steps = s.steps + 1


def _finish(
    s: _Packed,
    leaving: list[tuple[int, str, float, float, int]],
    positions: torch.Tensor,
    cells: torch.Tensor,
    record: Callable[[int, RelaxResult], None],
) -> None:
    """Record the structures in ``leaving`` (row, status, energy, fmax, steps) as they were
    last evaluated."""
    offsets = np.concatenate([[0], np.cumsum(s.sizes)])
    x, c = positions.cpu().double().numpy(), cells.detach().cpu().double().numpy()
    numbers, pbc = s.numbers.cpu().numpy(), s.pbc.cpu().numpy()
    for b, status, energy, f, steps in leaving:
        lo, hi = offsets[b], offsets[b + 1]
        atoms = Atoms(numbers=numbers[lo:hi], positions=x[lo:hi], cell=c[b], pbc=pbc[b])
        message = (
            "relaxation exploded (non-finite or absurd energy or forces)"
            if status == "failed"
            else ""
        )
        record(s.index[b], RelaxResult(atoms, energy, f, steps, status, message))


def _without(s: _Packed, row: int) -> _Packed | None:
    keep = [b != row for b in range(len(s))]
    return s.select(keep) if any(keep) else None


def _blame(exc: DataError, s: _Packed) -> int:
    """The row of the structure an error names (the first one when it names none)."""
    for b, i in enumerate(s.index):
        if exc.item is not None and str(exc.item) == str(i):
            return b
    return 0
