"""Conditions of a crystal diffusion model: scalar properties and chemical systems, embedded
into the vector that the denoiser's zero-initialised adapters read (MatterGen's recipe).

Each condition has its own embedding and its own learned *null* embedding, used where the
condition is unknown (NaN, or no chemical system) or dropped for classifier-free guidance; the
condition vector is the sum over conditions:

- a scalar property ``y`` (e.g. ``band_gap`` in eV): Gaussian radial basis of ``y`` on
  ``[low, high]`` (``n_basis`` centres, width one spacing), then a linear map;
- a chemical system: the multi-hot vector of its elements over the model's vocabulary, then a
  linear map.

Classifier-free guidance (Ho & Salimans 2022) mixes the conditional and the unconditional
(all-null) predictions, ``ŷ = (1 + w) ŷ_cond - w ŷ_uncond``, for the coordinate score, the
lattice noise and the type logits alike; ``w = 0`` is plain conditional sampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ConditionEmbedding", "PropertySpec"]


@dataclass(frozen=True)
class PropertySpec:
    """A scalar condition: its name (a column of the training data) and the range its basis
    covers."""

    name: str
    low: float
    high: float
    n_basis: int = 32

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"property {self.name!r}: high must exceed low")


class ConditionEmbedding(nn.Module):
    """``forward(properties, chemsys, drop) -> (B, dim)`` condition vectors.

    Args:
        dim: width of the condition vector (the denoiser's ``cond_dim``).
        properties: scalar conditions.
        num_classes: vocabulary size ``K``; chemical-system conditioning is on when > 0.
    """

    def __init__(
        self, dim: int, properties: Sequence[PropertySpec] = (), num_classes: int = 0
    ) -> None:
        super().__init__()
        self.dim = dim
        self.specs = tuple(properties)
        self.property_maps = nn.ModuleList(nn.Linear(s.n_basis, dim) for s in self.specs)
        self.property_nulls = nn.Parameter(torch.zeros(len(self.specs), dim))
        self.num_classes = num_classes
        self.chemsys_map = nn.Linear(num_classes, dim) if num_classes > 0 else None
        self.chemsys_null = nn.Parameter(torch.zeros(dim)) if num_classes > 0 else None
        nn.init.normal_(self.property_nulls, std=0.1)
        if self.chemsys_null is not None:
            nn.init.normal_(self.chemsys_null, std=0.1)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def _basis(self, spec: PropertySpec, y: torch.Tensor) -> torch.Tensor:
        centres = torch.linspace(spec.low, spec.high, spec.n_basis, device=y.device, dtype=y.dtype)
        width = (spec.high - spec.low) / (spec.n_basis - 1)
        return torch.exp(-0.5 * ((y[:, None] - centres) / width) ** 2)

    def forward(
        self,
        properties: Mapping[str, torch.Tensor] | None,
        chemsys: torch.Tensor | None = None,
        *,
        batch_size: int,
        drop: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Condition vectors of ``batch_size`` crystals.

        Args:
            properties: ``{name: (B,)}`` values (NaN: unknown); missing names count as unknown.
            chemsys: ``(B, K)`` multi-hot element sets, or None (unknown for all); an all-zero
                row is unknown.
            batch_size: ``B``.
            drop: ``(B,)`` bool, crystals whose every condition is replaced by its null
                embedding (classifier-free guidance dropout, or the unconditional branch).
            dtype, device: of the result.
        """
        out = torch.zeros(batch_size, self.dim, dtype=dtype, device=device)
        dropped = (
            torch.zeros(batch_size, dtype=torch.bool, device=device)
            if drop is None
            else drop.to(device=device, dtype=torch.bool)
        )
        for k, spec in enumerate(self.specs):
            null = self.property_nulls[k].to(dtype)
            value = (properties or {}).get(spec.name)
            if value is None:
                out = out + null
                continue
            y = value.to(device=device, dtype=dtype)
            known = torch.isfinite(y) & ~dropped
            embedded = self.property_maps[k](self._basis(spec, torch.nan_to_num(y)))
            out = out + torch.where(known[:, None], embedded, null)
        if self.chemsys_map is not None:
            null = self.chemsys_null.to(dtype)
            if chemsys is None:
                out = out + null
            else:
                hot = chemsys.to(device=device, dtype=dtype)
                known = (hot.sum(-1) > 0) & ~dropped
                out = out + torch.where(known[:, None], self.chemsys_map(hot), null)
        return out
