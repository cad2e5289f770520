"""Single-structure relaxation through ASE: FIRE (and FrechetCellFilter for the cell) with the
matgen calculator. This is the reference the batched relaxer (:mod:`matgen.relax.fire`) is
tested against, and the path for one structure at a time."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from matgen.relax.fire import RelaxResult

__all__ = ["relax"]


def relax(
    atoms: Atoms,
    model: torch.nn.Module,
    *,
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> RelaxResult:
    """Relax a copy of ``atoms`` with ASE's FIRE; the cell too (FrechetCellFilter) when
    ``relax_cell`` and the structure is periodic in all directions."""
    from matgen.mlff.calculator import MatgenCalculator

    work = atoms.copy()
    work.calc = MatgenCalculator(model, device=device, dtype=dtype)
    target = FrechetCellFilter(work) if relax_cell and work.pbc.all() else work
    optimizer = FIRE(target, logfile=None)
    converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
    forces = target.get_forces()
    f = float(np.sqrt((forces**2).sum(axis=1).max())) if len(forces) else 0.0
    result = work.copy()
    return RelaxResult(
        atoms=result,
        energy=float(work.get_potential_energy()),
        fmax=f,
        steps=int(optimizer.nsteps),
        status="converged" if converged else "max_steps",
    )
