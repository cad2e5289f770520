"""Energy, forces and stress of any site-energy model from one backward pass.

Positions and cells are strained by a symmetric ``ε`` (zero-valued, tracked by autograd):

    x' = x (I + ε),   cell' = cell (I + ε)       (rows are vectors)
    F  = -dE/dx,      σ = (1/V) dE/dε           (eV/Å, eV/Å³; ASE's sign: tensile positive)

so forces and stress are exact derivatives of the same energy. A model only has to provide
``site_energies(positions, cell, batch, species)`` and ``species(batch)``.

:func:`evaluate_threaded` runs a model on parts of a batch side by side on CPU threads, one
single-threaded part per thread. A batch of many small systems spends its time in many short
operations that threads inside each operation barely speed up; whole parts on their own threads
do (``benchmarks/bench_threaded_eval.py`` measures both on 100 MP-20 structures).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

import torch

from matgen.data.batch import AtomsBatch
from matgen.data.threads import run_ranges

__all__ = ["SiteEnergyModel", "energy_forces_stress", "evaluate_threaded"]

#: Fewest atoms per part of :func:`evaluate_threaded` (smaller batches run in one call).
MIN_PART_ATOMS = 16


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


def evaluate_threaded(
    model: Callable[..., dict[str, torch.Tensor]],
    batch: AtomsBatch,
    *,
    threads: int | None = None,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """``model(batch, **kwargs)`` for inference (outputs without a graph), with the batch's
    systems split into up to ``threads`` parts of consecutive systems and about equal atoms
    (:meth:`AtomsBatch.chunks`), each evaluated single-threaded on its own thread; the parts'
    outputs (per system or per atom, first axis) are concatenated in order. ``threads`` defaults
    to ``torch.get_num_threads()``.

    One call of the whole batch is made instead on other devices than the CPU, for one thread,
    a single system, fewer than :data:`MIN_PART_ATOMS` atoms per part, parts so unequal that
    the largest holds over 1.5 times its share, a model that is not a ``torch.nn.Module`` (its
    parameters could not be frozen for all parts at once), a call that keeps the graph
    (``training`` or ``create_graph`` true) and under autocast. The model's parameters are
    frozen for the call (as :func:`energy_forces_stress` does per call); every part runs in
    the caller's grad and inference mode; the thread count is restored after the call. An error
    of any part (e.g. a :class:`~matgen.data.errors.DataError` naming its structure) is raised
    once every part has finished. Per system, the numbers are those of one call up to rounding
    (a part may pair its edges where the whole batch does not)."""
    threads = torch.get_num_threads() if threads is None else int(threads)
    parts = min(threads, len(batch), batch.num_atoms // MIN_PART_ATOMS)
    if (
        batch.device.type != "cpu"
        or parts < 2
        or not isinstance(model, torch.nn.Module)
        or kwargs.get("training")
        or kwargs.get("create_graph")
        or torch.is_autocast_enabled("cpu")
    ):
        return model(batch, **kwargs)
    chunks = batch.chunks(parts)
    if len(chunks) < 2 or max(c.num_atoms for c in chunks) > 1.5 * batch.num_atoms / len(chunks):
        return model(batch, **kwargs)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    outs: list[dict[str, torch.Tensor]] = [{}] * len(chunks)

    def part(k: int, _lo: int, _hi: int) -> None:
        torch.set_num_threads(1)  # per thread (OpenMP): this part runs on this thread alone
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):  # per thread too
            outs[k] = model(chunks[k], **kwargs)

    outer = torch.get_num_threads()
    try:
        with _frozen(model):  # every part finishes before it ends, even after an error
            run_ranges(part, [(k, k + 1) for k in range(len(chunks))])
    finally:
        torch.set_num_threads(outer)
    merged = {}
    for key, value in outs[0].items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise ValueError(f"output {key!r} is not per system or per atom: cannot merge parts")
        merged[key] = torch.cat([out[key] for out in outs])
    return merged
