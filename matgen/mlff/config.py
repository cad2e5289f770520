"""Hyperparameters of the MACE potential, with named presets.

The ``mp0-*`` presets mirror the architecture of the MACE-MP-0 foundation models (Batatia et al.,
"A foundation model for atomistic materials chemistry", 2023): 128 channels, hidden irreps up to
``L = 0 / 1 / 2``, ``r_max = 6`` Å, 10 Bessel functions, spherical harmonics to ``l = 3``, two
interactions, correlation 3, 89 elements. ``cpu-small`` is a compact model that trains on a CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ase.data import chemical_symbols

__all__ = ["PRESETS", "MACEConfig", "preset"]

#: Elements H..Pu minus Po-Ac (85-89 excluded in MP): the 89 species of MACE-MP-0.
MP_ELEMENTS: tuple[int, ...] = tuple(list(range(1, 84)) + list(range(89, 95)))


@dataclass(frozen=True)
class MACEConfig:
    """Architecture and fixed statistics of one MACE model.

    Attributes:
        elements: atomic numbers the model knows, in the order of its element one-hot.
        r_max: cutoff radius (Å).
        num_bessel: number of radial Bessel functions.
        cutoff_p: exponent ``p`` of the polynomial envelope.
        max_ell: highest degree of the edge spherical harmonics.
        hidden_irreps: node-feature irreps of the inner layers, e.g. ``"128x0e + 128x1o"``;
            all multiplicities equal (the channel count).
        correlation: body order of the symmetric contraction, one value or one per layer.
        num_interactions: number of message-passing layers.
        radial_mlp: hidden widths of the radial MLP.
        mlp_irreps: hidden irreps of the last readout.
        first_interaction: ``"element"`` (MACE's ``RealAgnosticInteractionBlock``) or
            ``"residual"`` (``RealAgnosticResidualInteractionBlock``) for layer one; later
            layers are always residual.
        avg_num_neighbors: message normalisation, the training set's mean neighbour count.
        atomic_energies: reference energy of each element (eV), same order as ``elements``.
        scale, shift: site interaction energies are ``scale * e + shift`` (eV).
    """

    elements: tuple[int, ...]
    r_max: float = 6.0
    num_bessel: int = 10
    cutoff_p: int = 5
    max_ell: int = 3
    hidden_irreps: str = "128x0e + 128x1o"
    correlation: int | tuple[int, ...] = 3
    num_interactions: int = 2
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    mlp_irreps: str = "16x0e"
    first_interaction: Literal["element", "residual"] = "element"
    avg_num_neighbors: float = 1.0
    atomic_energies: tuple[float, ...] = field(default=())
    scale: float = 1.0
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError("a MACE model needs at least one element")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"repeated elements in {self.elements}")
        bad = [z for z in self.elements if not 0 < z < len(chemical_symbols)]
        if bad:
            raise ValueError(f"atomic numbers out of range: {bad}")
        if not self.atomic_energies:
            object.__setattr__(self, "atomic_energies", (0.0,) * len(self.elements))
        if len(self.atomic_energies) != len(self.elements):
            raise ValueError(
                f"{len(self.atomic_energies)} atomic energies for {len(self.elements)} elements"
            )
        if self.first_interaction not in ("element", "residual"):
            raise ValueError(
                f"first_interaction must be 'element' or 'residual', got {self.first_interaction!r}"
            )
        if self.num_interactions < 1:
            raise ValueError("num_interactions must be at least 1")
        object.__setattr__(self, "elements", tuple(int(z) for z in self.elements))
        object.__setattr__(self, "atomic_energies", tuple(float(e) for e in self.atomic_energies))
        object.__setattr__(self, "radial_mlp", tuple(int(w) for w in self.radial_mlp))
        if isinstance(self.correlation, list | tuple):
            if len(self.correlation) != self.num_interactions:
                raise ValueError(
                    f"{len(self.correlation)} correlation orders for "
                    f"{self.num_interactions} interactions"
                )
            object.__setattr__(self, "correlation", tuple(int(c) for c in self.correlation))

    @property
    def correlations(self) -> tuple[int, ...]:
        """Correlation order of each layer."""
        if isinstance(self.correlation, tuple):
            return self.correlation
        return (int(self.correlation),) * self.num_interactions

    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.elements]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dictionary (round-trips through :meth:`from_dict`)."""
        out = asdict(self)
        for key in ("elements", "radial_mlp", "atomic_energies"):
            out[key] = list(out[key])
        if isinstance(self.correlation, tuple):
            out["correlation"] = list(self.correlation)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MACEConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MACE config keys: {sorted(unknown)}")
        data = dict(data)
        for key in ("elements", "radial_mlp", "atomic_energies"):
            if key in data:
                data[key] = tuple(data[key])
        if isinstance(data.get("correlation"), list):
            data["correlation"] = tuple(data["correlation"])
        return cls(**data)

    def replace(self, **changes: Any) -> MACEConfig:
        return replace(self, **changes)


_MP0 = dict(
    elements=MP_ELEMENTS,
    r_max=6.0,
    num_bessel=10,
    cutoff_p=5,
    max_ell=3,
    correlation=3,
    num_interactions=2,
    radial_mlp=(64, 64, 64),
    mlp_irreps="16x0e",
    first_interaction="element",
)

PRESETS: dict[str, dict[str, Any]] = {
    "mp0-small": {**_MP0, "hidden_irreps": "128x0e"},
    "mp0-medium": {**_MP0, "hidden_irreps": "128x0e + 128x1o"},
    "mp0-large": {**_MP0, "hidden_irreps": "128x0e + 128x1o + 128x2e"},
    "cpu-small": {
        "r_max": 5.0,
        "num_bessel": 8,
        "cutoff_p": 5,
        "max_ell": 3,
        "hidden_irreps": "32x0e + 32x1o",
        "correlation": 3,
        "num_interactions": 2,
        "radial_mlp": (64, 64, 64),
        "mlp_irreps": "16x0e",
        "first_interaction": "element",
    },
}


def preset(name: str, **overrides: Any) -> MACEConfig:
    """A named preset, with any field overridden (``elements`` is required for ``cpu-small``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown MACE preset {name!r}; choose from {sorted(PRESETS)}")
    values = {**PRESETS[name], **overrides}
    if "elements" not in values:
        raise ValueError(f"preset {name!r} needs elements=...")
    return MACEConfig(**values)
