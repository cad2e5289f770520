"""Hyperparameters of the crystal denoiser (:class:`~matgen.generators.crystal.denoiser.
CrystalDenoiser`), with named presets.

``diffcsp`` is the size of DiffCSP's CSPNet (Jiao et al., "Crystal Structure Prediction by Joint
Equivariant Diffusion", NeurIPS 2023, appendix on implementation details; the released
configuration ``conf/model/decoder/cspnet.yaml`` and ``conf/model/diffusion_w_type.yaml`` agree):
6 layers of 512 channels, 128 Fourier frequencies per fractional axis, a 256-dimensional time
embedding. ``cpu-small`` (128 channels, 4 layers) trains on a CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["PRESETS", "CrystalDenoiserConfig", "preset"]


@dataclass(frozen=True)
class CrystalDenoiserConfig:
    """Architecture of one crystal denoiser.

    Attributes:
        elements: atomic numbers of the ``K`` element classes, in the order of the type indices;
            index ``K`` is the mask token of absorbing-state diffusion.
        hidden_dim: channels of the node and edge features.
        num_layers: message-passing layers.
        n_freq: Fourier frequencies ``m = 1 .. n_freq`` per fractional axis (``6 n_freq`` edge
            features).
        time_dim: width of the sinusoidal time embedding (even).
        cond_dim: width of the condition vector read by the zero-initialised adapters; 0: none.
        canonicalize: run the network in the Niggli-reduced frames of the input lattice and
            average over the lattice's automorphisms, which makes the outputs independent of the
            choice of unit cell (costs about two network evaluations).
    """

    elements: tuple[int, ...]
    hidden_dim: int = 128
    num_layers: int = 4
    n_freq: int = 32
    time_dim: int = 128
    cond_dim: int = 0
    canonicalize: bool = True

    def __post_init__(self) -> None:
        elements = tuple(int(z) for z in self.elements)
        if not elements:
            raise ValueError("a crystal denoiser needs at least one element")
        if len(set(elements)) != len(elements):
            raise ValueError(f"repeated elements in {elements}")
        bad = [z for z in elements if not 0 < z <= 118]
        if bad:
            raise ValueError(f"atomic numbers out of range 1..118: {bad}")
        object.__setattr__(self, "elements", elements)
        for name in ("hidden_dim", "num_layers", "n_freq"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.time_dim < 4 or self.time_dim % 2:
            raise ValueError(f"time_dim must be even and at least 4, got {self.time_dim}")
        if self.cond_dim < 0:
            raise ValueError(f"cond_dim must be >= 0, got {self.cond_dim}")

    @property
    def num_classes(self) -> int:
        """``K``, the number of element classes (the mask token is index ``K``)."""
        return len(self.elements)

    @property
    def mask_index(self) -> int:
        return len(self.elements)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dictionary (round-trips through :meth:`from_dict`)."""
        out = asdict(self)
        out["elements"] = list(self.elements)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrystalDenoiserConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown crystal denoiser config keys: {sorted(unknown)}")
        return cls(**{**data, "elements": tuple(data["elements"])})

    def replace(self, **changes: Any) -> CrystalDenoiserConfig:
        return replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    "cpu-small": {"hidden_dim": 128, "num_layers": 4, "n_freq": 32, "time_dim": 128},
    "diffcsp": {"hidden_dim": 512, "num_layers": 6, "n_freq": 128, "time_dim": 256},
}


def preset(name: str, **overrides: Any) -> CrystalDenoiserConfig:
    """A named preset with any field overridden; ``elements=...`` is required."""
    if name not in PRESETS:
        raise KeyError(f"unknown crystal denoiser preset {name!r}; choose from {sorted(PRESETS)}")
    values = {**PRESETS[name], **overrides}
    if "elements" not in values:
        raise ValueError(f"preset {name!r} needs elements=... (the atomic numbers of the classes)")
    return CrystalDenoiserConfig(**values)
