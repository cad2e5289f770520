"""Invariant inputs of the crystal denoiser: diffusion-time embedding, periodic Fourier features of
fractional differences, and the rotation-invariant shape of the lattice.

- :class:`SinusoidalTimeEmbedding`: ``t in [0, 1] -> [sin(1000 t ω_k), cos(1000 t ω_k)]``,
  ``ω_k = 10000^(-k / (d/2 - 1))``, ``k = 0 .. d/2 - 1`` (the Transformer / DDPM embedding of the
  step index ``1000 t``).
- :func:`fractional_fourier_features`: for ``Δf = f_j - f_i``,
  ``[sin(2π m Δf_c), cos(2π m Δf_c)]`` for ``m = 1 .. n_freq`` and ``c = 1, 2, 3``. Periodic in
  each ``Δf_c`` with period 1, so a lattice-vector shift of an atom or a translation of all atoms
  by the same fractional vector leaves it unchanged (DiffCSP's Fourier transformation ψ_FT of
  relative fractional coordinates, Jiao et al., NeurIPS 2023, without its constant ``m = 0``
  term).
- :func:`lattice_invariants`: ``(log |a|, log |b|, log |c|, cos α, cos β, cos γ)``, functions of
  the Gram matrix ``L L^T`` only, so unchanged under ``L -> L R^T`` for any orthogonal ``R``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalTimeEmbedding", "fractional_fourier_features", "lattice_invariants"]


class SinusoidalTimeEmbedding(nn.Module):
    """``(B,)`` diffusion times in [0, 1] ``-> (B, dim)``; see the module docstring."""

    def __init__(self, dim: int, *, steps: float = 1000.0) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"time embedding dimension must be even and >= 4, got {dim}")
        self.dim = dim
        self.steps = steps

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        k = torch.arange(half, device=t.device, dtype=t.dtype)
        omega = torch.exp(-math.log(10000.0) * k / (half - 1))
        angle = (self.steps * t)[:, None] * omega[None, :]
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def fractional_fourier_features(delta: torch.Tensor, n_freq: int) -> torch.Tensor:
    """Fourier features ``(E, 6 n_freq)`` of fractional differences ``delta (E, 3)``.

    Layout: ``[sin(2π m Δf_c)]_{c, m}`` then ``[cos(2π m Δf_c)]_{c, m}``, ``c``-major.
    """
    m = torch.arange(1, n_freq + 1, device=delta.device, dtype=delta.dtype)
    angle = (2.0 * math.pi) * delta[:, :, None] * m  # (E, 3, n_freq)
    return torch.cat([torch.sin(angle).flatten(1), torch.cos(angle).flatten(1)], dim=-1)


def lattice_invariants(lattice: torch.Tensor, *, min_length: float = 1e-6) -> torch.Tensor:
    """``(B, 6)`` log-lengths (log Å) and angle cosines of lattices ``(B, 3, 3)`` (rows).

    ``cos α`` is between ``b`` and ``c``, ``cos β`` between ``a`` and ``c``, ``cos γ`` between
    ``a`` and ``b``; lengths are clamped at ``min_length`` Å.
    """
    gram = lattice @ lattice.transpose(-1, -2)
    length = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(min_length**2))
    la, lb, lc = length.unbind(-1)
    cos = torch.stack(
        [gram[:, 1, 2] / (lb * lc), gram[:, 0, 2] / (la * lc), gram[:, 0, 1] / (la * lb)], dim=-1
    )
    return torch.cat([torch.log(length), cos], dim=-1)
