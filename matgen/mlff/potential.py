"""Energy, forces and stress of any site-energy model from one backward pass.

Positions and cells are strained by a symmetric ``ε`` (zero-valued, tracked by autograd):

    x' = x (I + ε),   cell' = cell (I + ε)       (rows are vectors)
    F  = -dE/dx,      σ = (1/V) dE/dε           (eV/Å, eV/Å³; ASE's sign: tensile positive)

so forces and stress are exact derivatives of the same energy. A model only has to provide
``site_energies(positions, cell, batch, species)`` and ``species(batch)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch

from matgen.data.batch import AtomsBatch

__all__ = ["SiteEnergyModel", "energy_forces_stress"]


class SiteEnergyModel(Protocol):
    def species(self, batch: AtomsBatch) -> torch.Tensor: ...

    def site_energies(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        batch: AtomsBatch,
        species: torch.Tensor,
    ) -> torch.Tensor: ...


def energy_forces_stress(
    model: SiteEnergyModel,
    batch: AtomsBatch,
    *,
    forces: bool = True,
    stress: bool = True,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """``{"energy": (B,), "forces": (N, 3), "stress": (B, 3, 3)}`` for a batch with edges.

    Stress is zero for systems with no periodic direction (their volume is undefined).
    ``create_graph`` keeps the derivative graph (force and stress losses)."""
    species = model.species(batch)
    positions = batch.positions
    cell = batch.cell
    need_grad = forces or stress
    inputs = []
    if need_grad:
        positions = positions.detach().requires_grad_(True)
        inputs.append(positions)
    if stress:
        strain = torch.zeros_like(cell).requires_grad_(True)
        inputs.append(strain)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
        positions = positions + torch.einsum("ni,nij->nj", positions, sym[batch.batch])
        cell = torch.matmul(cell, eye + sym)
    with (
        torch.enable_grad() if need_grad else contextlib.nullcontext(),
        _frozen(model) if need_grad and not create_graph else contextlib.nullcontext(),
    ):
        site = model.site_energies(positions, cell, batch, species)
        energy = site.new_zeros(len(batch)).index_add(0, batch.batch, site)
        out: dict[str, torch.Tensor] = {
            "energy": energy if create_graph or not need_grad else energy.detach()
        }
        if need_grad:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=create_graph, allow_unused=True
            )
            if forces:
                g = grads[0]
                out["forces"] = -g if g is not None else torch.zeros_like(batch.positions)
            if stress:
                g = grads[-1]
                g = torch.zeros_like(batch.cell) if g is None else g
                volume = torch.linalg.det(batch.cell).abs()
                periodic = batch.pbc.any(dim=1) & (volume > 0)
                safe = torch.where(periodic, volume, torch.ones_like(volume))
                out["stress"] = torch.where(
                    periodic[:, None, None], g / safe[:, None, None], torch.zeros_like(g)
                )
    return out


@contextlib.contextmanager
def _frozen(model: SiteEnergyModel) -> Iterator[None]:
    """Parameters without gradients for one call whose energy is returned detached (nothing can
    reach them), so that backward passes skip the parameter gradients."""
    params = (
        [p for p in model.parameters() if p.requires_grad]
        if isinstance(model, torch.nn.Module)
        else []
    )
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
