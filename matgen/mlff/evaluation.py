"""Errors of a potential on labelled configurations: MAE and RMSE per quantity, per element.

Units of the report: energy in meV per configuration and meV/atom, forces in meV/Å (also per
element), stress in meV/Å³ (and GPa). Only quantities labelled in the data are reported.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from matgen.data import AtomsDataset
from matgen.data.batch import AtomsBatch
from matgen.mlff.statistics import batch_errors

__all__ = ["evaluate_potential", "format_errors"]

EV_PER_A3_TO_GPA = 160.21766208


def evaluate_potential(
    model: torch.nn.Module,
    dataset: AtomsDataset,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    """MAE / RMSE of ``model`` on every labelled quantity of ``dataset``."""
    model = model.to(device=device, dtype=dtype).eval()
    collected: dict[str, list[np.ndarray]] = defaultdict(list)
    numbers = []
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(start + batch_size, len(dataset))))
        batch = AtomsBatch.from_collection(dataset.collection, idx, dtype=dtype, device=device)
        periodic = bool(batch.pbc.any())
        pred = model(batch, forces=True, stress=periodic)
        err = batch_errors(pred, batch)
        for key, value in err.items():
            collected[key].append(value.detach().cpu().double().numpy())
        if "energy_per_atom" in err:
            collected["energy"].append(
                (err["energy_per_atom"] * batch.n_atoms).detach().cpu().double().numpy()
            )
        numbers.append(batch.numbers.cpu().numpy())
    z = np.concatenate(numbers)
    out: dict[str, Any] = {"n_configurations": len(dataset), "n_atoms": int(z.size)}
    scale = {"energy": 1000.0, "energy_per_atom": 1000.0, "forces": 1000.0, "stress": 1000.0}
    units = {"energy": "meV", "energy_per_atom": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³"}
    for key, parts in collected.items():
        values = np.concatenate(parts).reshape(len(np.concatenate(parts)), -1)
        out[key] = {
            "mae": float(np.abs(values).mean() * scale[key]),
            "rmse": float(np.sqrt((values**2).mean()) * scale[key]),
            "unit": units[key],
        }
    if "forces" in collected:
        f = np.concatenate(collected["forces"])
        out["forces_per_element"] = {
            chemical_symbols[int(e)]: {
                "mae": float(np.abs(f[z == e]).mean() * 1000.0),
                "rmse": float(np.sqrt((f[z == e] ** 2).mean()) * 1000.0),
                "n_atoms": int((z == e).sum()),
            }
            for e in np.unique(z)
        }
    if "stress" in collected:
        s = np.concatenate(collected["stress"])
        out["stress_GPa"] = {
            "mae": float(np.abs(s).mean() * EV_PER_A3_TO_GPA),
            "rmse": float(np.sqrt((s**2).mean()) * EV_PER_A3_TO_GPA),
            "unit": "GPa",
        }
    return out


def format_errors(report: dict[str, Any], title: str = "") -> str:
    """A readable table of :func:`evaluate_potential`'s report."""
    lines = [title] if title else []
    lines.append(f"{report['n_configurations']} configurations, {report['n_atoms']} atoms")
    lines.append(f"{'quantity':<22}{'MAE':>12}{'RMSE':>12}  unit")
    for key in ("energy", "energy_per_atom", "forces", "stress", "stress_GPa"):
        if key in report:
            r = report[key]
            lines.append(f"{key:<22}{r['mae']:>12.3f}{r['rmse']:>12.3f}  {r['unit']}")
    for el, r in report.get("forces_per_element", {}).items():
        lines.append(f"{'forces ' + el:<22}{r['mae']:>12.3f}{r['rmse']:>12.3f}  meV/Å")
    return "\n".join(lines)
