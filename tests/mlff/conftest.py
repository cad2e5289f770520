"""A small MACE with every block of the full one, and real structures to test it on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from matgen.mlff.config import MACEConfig
from matgen.mlff.mace import MACE

#: MP-20 test rows used by the model tests (small cells, several element kinds).
MP20_ROWS = (0, 1, 2, 3, 5)


def small_config(elements, *, first_interaction: str = "element") -> MACEConfig:
    elements = tuple(sorted(set(int(z) for z in elements)))
    rng = np.random.default_rng(0)
    return MACEConfig(
        elements=elements,
        r_max=4.5,
        num_bessel=6,
        max_ell=2,
        hidden_irreps="8x0e + 8x1o",
        correlation=3,
        num_interactions=2,
        radial_mlp=(16, 16),
        mlp_irreps="8x0e",
        first_interaction=first_interaction,
        avg_num_neighbors=12.0,
        atomic_energies=tuple(rng.normal(-3.0, 1.0, len(elements))),
        scale=1.7,
        shift=0.2,
    )


@pytest.fixture(scope="session")
def mp20_atoms(mp20_test) -> list[Atoms]:
    """MP-20 test structures, rattled by 0.05 Å so that no force vanishes by symmetry."""
    out = []
    for k, i in enumerate(MP20_ROWS):
        atoms = mp20_test.atoms(i)
        atoms.calc = None
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


@pytest.fixture(scope="session", params=["element", "residual"])
def model(request, mp20_atoms, ethanol) -> MACE:
    numbers = np.concatenate([a.numbers for a in [*mp20_atoms, ethanol]])
    torch.manual_seed(7)
    return MACE(small_config(numbers, first_interaction=request.param)).eval()
