"""Radial features of an edge length: a Bessel basis times a smooth polynomial cutoff envelope.

For ``r`` in Å and cutoff ``r_max``:

    B_n(r) = sqrt(2 / r_max) * sin(n * pi * r / r_max) / r,       n = 1..num_basis
    u(x)   = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2),   x = r / r_max < 1
    f_n(r) = B_n(r) * u(r / r_max)

``u`` and its first two derivatives vanish at ``x = 1`` (Klicpera et al., DimeNet, 2020), so
energies and forces are continuous when a neighbour crosses the cutoff. These are the radial
features of MACE (Batatia et al., 2022); the frequencies are fixed, not trained.
"""

from __future__ import annotations

import math

import torch
from e3nn import nn as e3nn_nn
from e3nn.math import normalize2mom
from torch import nn

__all__ = ["BesselBasis", "PolynomialCutoff", "RadialEmbedding", "RadialMLP"]


class BesselBasis(nn.Module):
    """``(E,) -> (E, num_basis)`` sine Bessel functions of order zero, normalised on ``[0, r_max]``."""

    def __init__(self, r_max: float, num_basis: int) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.num_basis = int(num_basis)
        freqs = (
            math.pi / self.r_max * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        )
        self.register_buffer("frequencies", freqs)
        self.prefactor = math.sqrt(2.0 / self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r) / r


class PolynomialCutoff(nn.Module):
    """``(E,) -> (E,)`` the envelope ``u(r / r_max)``, zero beyond ``r_max``."""

    def __init__(self, r_max: float, p: int = 5) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"the polynomial cutoff needs p >= 2 for smooth forces, got {p}")
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p, x = self.p, r / self.r_max
        envelope = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * x**p
            + p * (p + 2.0) * x ** (p + 1)
            - p * (p + 1.0) / 2.0 * x ** (p + 2)
        )
        return envelope * (x < 1.0)


class RadialEmbedding(nn.Module):
    """``(E,) -> (E, num_basis)``: Bessel basis times polynomial cutoff."""

    def __init__(self, r_max: float, num_basis: int, p: int = 5) -> None:
        super().__init__()
        self.bessel = BesselBasis(r_max, num_basis)
        self.cutoff = PolynomialCutoff(r_max, p)
        self.out_dim = int(num_basis)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.bessel(r) * self.cutoff(r).unsqueeze(-1)


class RadialMLP(e3nn_nn.FullyConnectedNet):
    """e3nn's ``FullyConnectedNet`` (same parameters, state dict and numbers up to rounding).
    The activation's normalising constant (e3nn's ``normalize2mom``) and ``var_out ** 0.5`` are
    folded into the next layer's weight, where e3nn multiplies every ``(E, width)`` hidden
    activation by them: a pass per hidden layer fewer, forward and backward, on every edge.

    Args:
        hs: input, hidden and output widths.
        act: activation (normalised to unit second moment, as by e3nn).
    """

    def __init__(self, hs: list[int], act) -> None:
        super().__init__(hs, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0  # the factor the activations x still owe
        for layer in self:
            norm = layer.h_in * layer.var_in
            if layer.act is None:
                norm /= layer.var_out
            x = x @ (layer.weight * (scale / norm**0.5))
            scale = 1.0
            if layer.act is not None:
                act = layer.act
                # e3nn skips a constant within 1e-4 of one (``_is_id``); without the flag, act
                # is called as it is
                if isinstance(act, normalize2mom) and not getattr(act, "_is_id", True):
                    act, scale = act.f, act.cst
                x = act(x)
                scale *= layer.var_out**0.5
        return x if scale == 1.0 else x * scale
