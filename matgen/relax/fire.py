"""Batched FIRE relaxation of many structures at once, with ASE's FrechetCellFilter cell semantics.

Every structure keeps its own FIRE state (velocity, time step, mixing ``a``, step counter) with
ASE's parameters and update rule (``ase.optimize.FIRE``: ``dt = 0.1``, ``maxstep = 0.2`` Å,
``dtmax = 1``, ``Nmin = 5``, ``finc = 1.1``, ``fdec = 0.5``, ``astart = fa·… = 0.1``,
``fa = 0.99``); only the force evaluations are batched. With ``relax_cell`` the degrees of
freedom are those of ``ase.filters.FrechetCellFilter``: positions in the undeformed cell,
``u = x F^-T``, and ``n_atoms · log F`` for the deformation gradient ``F`` (``cell = cell0 F^T``);
the generalised forces are ``f F`` on the atoms and ``D exp(log F)^*[σ_v F^-T] / n_atoms`` on
the cell, with the virial ``σ_v = -V σ`` and the adjoint Fréchet derivative of the matrix
exponential taken by autograd. A structure has converged when the largest row norm of its
generalised forces (atoms and cell) is at most ``fmax``, checked before each step as ASE does.

Continuous batching: converged (or failed) structures leave the batch and waiting ones enter,
keeping at most ``max_atoms`` atoms in flight. A structure whose energy or forces become
non-finite or absurd is stopped and flagged; it never affects the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms

from matgen.data.batch import AtomsBatch
from matgen.data.errors import DataError

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
class _State:
    """FIRE state of one structure (tensors on the relaxation device)."""

    index: int
    numbers: torch.Tensor
    pbc: torch.Tensor
    cell0: torch.Tensor  # (3, 3)
    u: torch.Tensor  # (n, 3) positions in the undeformed cell (Cartesian if the cell is fixed)
    log_f: torch.Tensor  # (3, 3) n_atoms * log F
    vel: torch.Tensor  # (n + 3, 3) or (n, 3)
    dt: float
    a: float
    n_steps: int = 0
    steps: int = 0
    history: list[float] = field(default_factory=list)


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
) -> list[RelaxResult]:
    """Relax ``structures`` with ``model`` (``model(batch) -> energy, forces, stress``).

    Args:
        fmax: convergence threshold on atomic and cell forces (eV/Å).
        max_steps: FIRE steps per structure before giving up.
        relax_cell: optimise the cell of periodic structures (FrechetCellFilter semantics).
        max_atoms: atoms evaluated together at most (the memory budget).
        on_result: called with ``(index, result)`` as each structure finishes (for streaming
            results into a store).

    Returns:
        One :class:`RelaxResult` per input, in input order.
    """
    params = params or FIREParameters()
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype)
    results: list[RelaxResult | None] = [None] * len(structures)
    waiting = list(range(len(structures)))[::-1]
    active: list[_State] = []

    def finish(state: _State, status: str, energy: float, f: float, message: str = "") -> None:
        atoms = _to_atoms(state, relax_cell)
        result = RelaxResult(atoms, energy, f, state.steps, status, message)
        results[state.index] = result
        if on_result is not None:
            on_result(state.index, result)

    while waiting or active:
        budget = max_atoms - sum(len(s.numbers) for s in active)
        while waiting and (not active or len(structures[waiting[-1]]) <= budget):
            i = waiting.pop()
            try:
                state = _initial_state(i, structures[i], params, device, dtype, relax_cell)
            except DataError as exc:
                results[i] = RelaxResult(
                    structures[i].copy(), float("nan"), float("nan"), 0, "failed", str(exc)
                )
                if on_result is not None:
                    on_result(i, results[i])
                continue
            active.append(state)
            budget -= len(state.numbers)
        if not active:
            continue
        try:
            energies, gen_forces = _evaluate(model, active, relax_cell)
        except DataError as exc:  # one bad structure: evaluate the rest without it
            bad = _blame(exc, active)
            finish(bad, "failed", float("nan"), float("nan"), str(exc))
            active.remove(bad)
            continue
        keep = []
        for state, energy, g in zip(active, energies, gen_forces, strict=True):
            n = len(state.numbers)
            row_norm = torch.linalg.vector_norm(g, dim=1)
            f = float(row_norm.max()) if len(row_norm) else 0.0
            if (
                not (np.isfinite(energy) and np.isfinite(f))
                or f > EXPLODED_FORCE
                or (abs(energy) / n > EXPLODED_ENERGY)
            ):
                finish(
                    state,
                    "failed",
                    energy,
                    f,
                    "relaxation exploded (non-finite or absurd energy or forces)",
                )
            elif f <= fmax:
                finish(state, "converged", energy, f)
            elif state.steps >= max_steps:
                finish(state, "max_steps", energy, f)
            else:
                _fire_step(state, g, params, relax_cell)
                keep.append(state)
        active = keep
    return [r for r in results if r is not None]


def _initial_state(
    index: int,
    atoms: Atoms,
    params: FIREParameters,
    device: torch.device,
    dtype: torch.dtype,
    relax_cell: bool,
) -> _State:
    numbers, positions = atoms.numbers, atoms.positions
    if len(numbers) == 0:
        raise DataError("structure has no atoms", item=str(index))
    if not np.isfinite(positions).all():
        raise DataError("non-finite positions", item=str(index))
    kw = {"device": device, "dtype": dtype}
    cell_relax = relax_cell and bool(atoms.pbc.all())
    n = len(numbers)
    return _State(
        index=index,
        numbers=torch.as_tensor(numbers, device=device, dtype=torch.long),
        pbc=torch.as_tensor(atoms.pbc, device=device),
        cell0=torch.as_tensor(atoms.cell.array, **kw),
        u=torch.as_tensor(positions, **kw),
        log_f=torch.zeros(3, 3, **kw),
        vel=torch.zeros(n + 3 if cell_relax else n, 3, **kw),
        dt=params.dt,
        a=params.astart,
    )


def _has_cell(state: _State, relax_cell: bool) -> bool:
    return relax_cell and state.vel.shape[0] == len(state.numbers) + 3


def _deformation(state: _State, relax_cell: bool) -> torch.Tensor:
    if not _has_cell(state, relax_cell):
        return torch.eye(3, dtype=state.u.dtype, device=state.u.device)
    return torch.linalg.matrix_exp(state.log_f / len(state.numbers))


def _to_atoms(state: _State, relax_cell: bool) -> Atoms:
    f = _deformation(state, relax_cell)
    positions = (state.u @ f.T).detach().cpu().double().numpy()
    cell = (state.cell0 @ f.T).detach().cpu().double().numpy()
    return Atoms(
        numbers=state.numbers.cpu().numpy(),
        positions=positions,
        cell=cell,
        pbc=state.pbc.cpu().numpy(),
    )


def _evaluate(
    model: torch.nn.Module, states: list[_State], relax_cell: bool
) -> tuple[list[float], list[torch.Tensor]]:
    """Energies and generalised forces ``(n [+ 3], 3)`` of every active structure."""
    u0 = states[0].u
    n_atoms = torch.tensor([len(s.numbers) for s in states], device=u0.device)
    with_cell = [k for k, s in enumerate(states) if _has_cell(s, relax_cell)]
    deform = torch.eye(3, dtype=u0.dtype, device=u0.device).repeat(len(states), 1, 1)
    if with_cell:
        # (1 / n) * n log F for every cell-relaxing structure, one batched exponential
        logs = torch.stack([states[k].log_f / len(states[k].numbers) for k in with_cell])
        logs = logs.detach().requires_grad_(True)
        with torch.enable_grad():
            expm = torch.linalg.matrix_exp(logs)
        deform[with_cell] = expm.detach()
    positions = torch.cat([s.u @ deform[k].T for k, s in enumerate(states)])
    cells = torch.matmul(torch.stack([s.cell0 for s in states]), deform.transpose(1, 2))
    batch = AtomsBatch(
        positions=positions,
        numbers=torch.cat([s.numbers for s in states]),
        cell=cells,
        pbc=torch.stack([s.pbc for s in states]),
        n_atoms=n_atoms,
        ids=tuple(str(s.index) for s in states),
    )
    out = model(batch, forces=True, stress=bool(with_cell))
    energies = out["energy"].detach().cpu().double().tolist()
    forces = out["forces"].detach()
    log_forces = {}
    if with_cell:
        volume = torch.linalg.det(cells[with_cell]).abs()
        virial = -volume[:, None, None] * out["stress"][with_cell].detach()
        cell_grad = virial @ torch.linalg.inv(deform[with_cell].transpose(1, 2))
        (grad,) = torch.autograd.grad(expm, logs, grad_outputs=cell_grad)
        n_cell = n_atoms[with_cell].to(grad.dtype)[:, None, None]
        log_forces = dict(zip(with_cell, grad / n_cell, strict=True))
    offsets = batch.atom_offsets.tolist()
    generalised = []
    for k in range(len(states)):
        atom_forces = forces[offsets[k] : offsets[k + 1]]
        if k in log_forces:
            generalised.append(torch.cat([atom_forces @ deform[k], log_forces[k]], dim=0))
        else:
            generalised.append(atom_forces)
    return energies, generalised


def _fire_step(state: _State, force: torch.Tensor, p: FIREParameters, relax_cell: bool) -> None:
    """One ASE FIRE step on the structure's generalised coordinates."""
    if state.steps > 0:
        vf = float((force * state.vel).sum())
        if vf > 0.0:
            f_norm = float(torch.linalg.vector_norm(force))
            v_norm = float(torch.linalg.vector_norm(state.vel))
            state.vel = (1.0 - state.a) * state.vel + state.a * force / f_norm * v_norm
            if state.n_steps > p.n_min:
                state.dt = min(state.dt * p.finc, p.dtmax)
                state.a *= p.fa
            state.n_steps += 1
        else:
            state.vel = torch.zeros_like(state.vel)
            state.a = p.astart
            state.dt *= p.fdec
            state.n_steps = 0
    state.vel = state.vel + state.dt * force
    dr = state.dt * state.vel
    norm = float(torch.linalg.vector_norm(dr))
    if norm > p.maxstep:
        dr = dr * (p.maxstep / norm)
    n = len(state.numbers)
    state.u = state.u + dr[:n]
    if _has_cell(state, relax_cell):
        state.log_f = state.log_f + dr[n:]
    state.steps += 1


def _blame(exc: DataError, states: list[_State]) -> _State:
    """The active structure an error names (the first one when it names none)."""
    for state in states:
        if exc.item is not None and str(exc.item) == str(state.index):
            return state
    return states[0]
