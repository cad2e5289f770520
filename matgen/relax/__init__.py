"""Relaxation of many structures at once (batched FIRE with a Frechet cell filter) and of one
structure through ASE."""

from matgen.relax.ase_relax import relax
from matgen.relax.fire import FIREParameters, RelaxResult, relax_batched

__all__ = ["FIREParameters", "RelaxResult", "relax", "relax_batched"]
