"""Noise schedules over discrete diffusion time, and indexing them by time step.

Time steps are integers ``t = 1 .. T``; ``t = 0`` is the clean data. The schedule functions
return ``(T,)`` tensors whose entry ``t - 1`` belongs to step ``t`` (the clean-data value at
``t = 0`` is implicit: ``ᾱ_0 = 1``, ``σ_0 = 0``). The processes in this package keep
*step tables* of length ``T + 1`` with the ``t = 0`` value prepended (:func:`step_table`), so
that ``table[t]`` is the value at step ``t`` and jumps to ``s = 0`` need no special case.

* :func:`cosine_alpha_bars` — Nichol & Dhariwal (2021): ``f(u) = cos²((u + s)/(1 + s) · π/2)``,
  ``β_t = min(1 - f(t/T)/f((t-1)/T), β_max)``, ``ᾱ_t = Π_{i≤t} (1 - β_i)``;
* :func:`linear_alpha_bars` — ``ᾱ_t = 1 - t/T`` (the absorbing-state D3PM schedule of Austin et
  al. 2021, ``β_t = 1/(T - t + 1)``: each step masks the same expected number of tokens);
* :func:`geometric_sigmas` — ``σ_t = σ_min^{1-u} σ_max^u`` with ``u = (t - 1)/(T - 1)`` (the
  variance-exploding torus process of DiffCSP; ``σ_1 = σ_min``, ``σ_T = σ_max``);
* :class:`DDPMSchedule` — ``β_t``, ``α_t``, ``ᾱ_t`` and the posterior variances
  ``β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)`` of a DDPM from its ``ᾱ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DDPMSchedule",
    "at_steps",
    "cosine_alpha_bars",
    "geometric_sigma",
    "geometric_sigmas",
    "linear_alpha_bars",
    "sample_timesteps",
    "spaced_timesteps",
    "step_table",
]


def _check_timesteps(timesteps: int) -> None:
    if timesteps < 1:
        raise ValueError(f"the number of diffusion steps T must be at least 1, not {timesteps}")


def cosine_alpha_bars(
    timesteps: int,
    *,
    offset: float = 0.008,
    max_beta: float = 0.999,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """``ᾱ_t`` of the cosine schedule for ``t = 1 .. T`` (see the module docstring).

    Args:
        timesteps: ``T``.
        offset: ``s``, which keeps ``β_1`` away from 0.
        max_beta: ``β_max``, the clip of ``β_t`` (``ᾱ_T ≈ 2e-9`` for ``T = 1000``).
        dtype, device: of the result (computed in float64).

    Returns:
        ``(T,)``, strictly decreasing in (0, 1); entry ``t - 1`` is ``ᾱ_t``.
    """
    _check_timesteps(timesteps)
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((u + offset) / (1.0 + offset) * (math.pi / 2.0)) ** 2
    betas = (1.0 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1.0 - betas, dim=0).to(dtype=dtype, device=device)


def linear_alpha_bars(
    timesteps: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """``ᾱ_t = 1 - t/T`` for ``t = 1 .. T``: ``(T,)``, from ``1 - 1/T`` down to exactly 0."""
    _check_timesteps(timesteps)
    t = torch.arange(1, timesteps + 1, dtype=torch.float64)
    return (1.0 - t / timesteps).to(dtype=dtype, device=device)


def geometric_sigma(u: Tensor, sigma_min: float = 0.005, sigma_max: float = 0.5) -> Tensor:
    """Continuous-time geometric schedule ``σ(u) = σ_min^{1-u} σ_max^u`` for ``u ∈ [0, 1]``
    (any shape; ``u``'s dtype and device)."""
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return torch.exp(log_min + u * (log_max - log_min))


def geometric_sigmas(
    timesteps: int,
    sigma_min: float = 0.005,
    sigma_max: float = 0.5,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """``σ_t`` of the geometric schedule for ``t = 1 .. T``.

    Args:
        timesteps: ``T``.
        sigma_min, sigma_max: ``σ_1`` and ``σ_T`` (fractional-coordinate units).
        dtype, device: of the result (computed in float64).

    Returns:
        ``(T,)``, increasing from ``σ_min`` to ``σ_max`` (just ``σ_max`` when ``T = 1``).
    """
    _check_timesteps(timesteps)
    if not 0.0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min} and {sigma_max}")
    if timesteps == 1:
        u = torch.ones(1, dtype=torch.float64)
    else:
        u = torch.arange(timesteps, dtype=torch.float64) / (timesteps - 1)
    return geometric_sigma(u, sigma_min, sigma_max).to(dtype=dtype, device=device)


def step_table(values: Tensor, at_zero: float) -> Tensor:
    """Prepend the clean-data value: ``(T,)`` values of steps ``1..T`` → ``(T + 1,)`` indexed by
    step ``t = 0..T``."""
    return torch.cat([values.new_full((1,), at_zero), values])


def at_steps(table: Tensor, t: Tensor | int, like: Tensor, index: Tensor | None = None) -> Tensor:
    """Look up a step table at per-item steps, shaped to broadcast against ``like``.

    Args:
        table: ``(T + 1,)`` values indexed by step (see :func:`step_table`).
        t: int64 steps: an int, a 0-d tensor, ``(N,)`` with one step per row of ``like``, or
            ``(B,)`` with one step per item when ``index`` is given.
        like: the ``(N, ...)`` tensor the values will multiply; gives dtype and device.
        index: ``(N,)`` int64 item of each row of ``like`` (a ragged batch's graph index), or None.

    Returns:
        ``table[t]`` (``table[t[index]]`` with ``index``) as ``(N, 1, ..., 1)`` (``like.ndim``
        dimensions), or 0-d for a scalar step; in ``like``'s dtype and device.
    """
    table = table.to(device=like.device, dtype=like.dtype)
    if isinstance(t, int):
        return table[t]
    t = t.to(device=like.device)
    if index is not None:
        t = t[index.to(device=like.device)]
    values = table[t]
    if values.ndim == 0:
        return values
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def sample_timesteps(
    num: int,
    timesteps: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(num,)`` int64 steps drawn uniformly from ``1 .. T`` (training)."""
    _check_timesteps(timesteps)
    return torch.randint(1, timesteps + 1, (num,), generator=generator, device=device)


def spaced_timesteps(timesteps: int, steps: int) -> list[int]:
    """Decreasing steps ``T = t_0 > t_1 > ... ≥ 1`` of a ``steps``-step sampler, evenly spaced
    (rounded, duplicates dropped); the sampler then jumps from the last one to 0.

    Args:
        timesteps: ``T``.
        steps: number of network evaluations, ``1 .. T`` (``T``: every step).

    Returns:
        At most ``steps`` distinct integers, starting at ``T``.
    """
    _check_timesteps(timesteps)
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must lie in 1..{timesteps}, not {steps}")
    if steps == 1:
        return [timesteps]
    grid = torch.linspace(timesteps, 1, steps, dtype=torch.float64).round().long().tolist()
    return sorted(set(grid), reverse=True)


@dataclass(frozen=True)
class DDPMSchedule:
    """The per-step quantities of a DDPM, each ``(T,)`` with entry ``t - 1`` for step ``t``.

    Attributes:
        betas: ``β_t = 1 - ᾱ_t / ᾱ_{t-1}``, the variance added by step ``t``.
        alphas: ``α_t = 1 - β_t``.
        alpha_bars: ``ᾱ_t = Π_{i≤t} α_i``: ``x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε``.
        posterior_variances: ``β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)``, the variance of
            ``q(x_{t-1} | x_t, x_0)`` (0 at ``t = 1``).
    """

    betas: Tensor
    alphas: Tensor
    alpha_bars: Tensor
    posterior_variances: Tensor

    @property
    def timesteps(self) -> int:
        return int(self.alpha_bars.shape[0])

    @classmethod
    def from_alpha_bars(cls, alpha_bars: Tensor) -> DDPMSchedule:
        """Build from ``ᾱ_t``, ``(T,)``, decreasing in (0, 1) (validated)."""
        if alpha_bars.ndim != 1 or alpha_bars.numel() == 0:
            raise ValueError(f"alpha_bars must be a non-empty 1-D tensor, got {alpha_bars.shape}")
        previous = step_table(alpha_bars, 1.0)[:-1]
        if not bool(((alpha_bars > 0) & (alpha_bars < previous)).all()):
            raise ValueError("alpha_bars must decrease strictly from below 1 and stay above 0")
        alphas = alpha_bars / previous
        betas = 1.0 - alphas
        posterior = betas * (1.0 - previous) / (1.0 - alpha_bars)
        return cls(betas, alphas, alpha_bars, posterior)

    @classmethod
    def cosine(
        cls,
        timesteps: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> DDPMSchedule:
        """The cosine schedule of :func:`cosine_alpha_bars` (offset 0.008, ``β_max = 0.999``)."""
        return cls.from_alpha_bars(cosine_alpha_bars(timesteps, dtype=dtype, device=device))
