"""``MatgenCalculator``: any matgen potential as an ASE calculator.

Follows ASE's calculator contract: ``implemented_properties``, ``calculate()`` calls the base
class first, results in eV, eV/Å and eV/Å³ with ASE's sign, stress in Voigt order
``(xx, yy, zz, yz, xz, xy)``. Stress exists for systems with at least one periodic direction;
asking for it on a molecule raises ``PropertyNotImplementedError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from matgen.data.batch import AtomsBatch
from matgen.mlff.checkpoint import load_model

__all__ = ["MatgenCalculator"]


class MatgenCalculator(Calculator):
    """ASE calculator around a matgen potential ``model(batch) -> {energy, forces, stress}``.

    Args:
        model: a :class:`matgen.mlff.mace.MACE` (or any module with the same call signature).
        device: where to evaluate.
        dtype: floating dtype of the evaluation (the model is cast to it).
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_checkpoint(
        cls,
        path_or_name: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        **kwargs: Any,
    ) -> MatgenCalculator:
        """Load a shipped model by name or a checkpoint file (never unpickles code)."""
        return cls(
            load_model(path_or_name, device=device, dtype=dtype),
            device=device,
            dtype=dtype,
            **kwargs,
        )

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        periodic = bool(np.any(self.atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress is undefined for a non-periodic system")
        batch = AtomsBatch.from_atoms(
            [self.atoms],
            ids=[self.atoms.get_chemical_formula() or "empty"],
            dtype=self.dtype,
            device=self.device,
        )
        out = self.model(batch, forces=True, stress=periodic)
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if periodic:
            stress = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
