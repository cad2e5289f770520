"""DDPM on a Euclidean variable (e.g. lattice matrices), with ancestral and DDIM reverse steps.

Forward process (Ho et al. 2020), for any ``x_0`` of shape ``(N, ...)``:
``q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)``, i.e. ``x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε``. The network
predicts ``ε`` (the regression target), from which ``x̂_0 = (x_t - √(1 - ᾱ_t) ε̂) / √ᾱ_t``.

Posterior: ``q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)`` with
``μ̃_t = √ᾱ_{t-1} β_t / (1 - ᾱ_t) · x_0 + √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t``
``     = (x_t - β_t / √(1 - ᾱ_t) · ε) / √α_t`` (at ``x_0 = x̂_0``).
The ancestral step draws from it with ``x_0 = x̂_0``.

DDIM (Song et al. 2021), a jump ``t → s < t`` along any subsequence of steps:
``x_s = √ᾱ_s x̂_0 + √(1 - ᾱ_s - σ²) ε̂ + σ z`` with
``σ = η √((1 - ᾱ_s) / (1 - ᾱ_t)) √(1 - ᾱ_t / ᾱ_s)``: ``η = 0`` is deterministic, ``η = 1`` with
``s = t - 1`` is the ancestral step.

Every step takes ``t`` per row (``(N,)``), per item with a graph ``index`` (``(B,)`` and ``(N,)``)
or as an int; rows of ``x`` are independent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from matgen.generators.diffusion.schedules import (
    DDPMSchedule,
    at_steps,
    cosine_alpha_bars,
    step_table,
)

__all__ = ["GaussianDDPM"]


class GaussianDDPM(nn.Module):
    """Variance-preserving DDPM corruption and its reverse steps, parameterised by ``ε``.

    Holds the schedule as non-persistent float64 buffers (they follow ``.to(device)``; values
    are cast to the data's dtype at each use).

    Args:
        timesteps: ``T``.
        alpha_bars: ``(T,)`` ``ᾱ_1 .. ᾱ_T`` (strictly decreasing in (0, 1)), or None for
            :func:`~matgen.generators.diffusion.schedules.cosine_alpha_bars`.
    """

    def __init__(self, timesteps: int = 1000, *, alpha_bars: Tensor | None = None) -> None:
        super().__init__()
        if alpha_bars is None:
            alpha_bars = cosine_alpha_bars(timesteps)
        alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
        if alpha_bars.shape != (timesteps,):
            raise ValueError(f"alpha_bars must have shape ({timesteps},), got {alpha_bars.shape}")
        self.timesteps = timesteps
        self.schedule = DDPMSchedule.from_alpha_bars(alpha_bars)
        s = self.schedule
        self.register_buffer("_alpha_bars", step_table(s.alpha_bars, 1.0), persistent=False)
        self.register_buffer("_alphas", step_table(s.alphas, 1.0), persistent=False)
        self.register_buffer("_betas", step_table(s.betas, 0.0), persistent=False)
        self.register_buffer(
            "_posterior_variances", step_table(s.posterior_variances, 0.0), persistent=False
        )

    def _noise(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)

    def q_sample(
        self,
        x0: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        *,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``x_t ~ q(x_t | x_0)``.

        Args:
            x0: ``(N, ...)`` clean values.
            t: steps in ``1..T`` (per row, per item with ``index``, or an int).
            generator: random source on ``x0``'s device.
            index: ``(N,)`` item of each row, or None.
            noise: ``ε`` to use instead of a fresh draw (``x0``'s shape).

        Returns:
            ``(x_t, ε)``; ``ε`` is the regression target of an ``ε``-predicting network.
        """
        eps = self._noise(x0, generator) if noise is None else noise
        ab = at_steps(self._alpha_bars, t, x0, index)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps, eps

    def predict_x0(
        self, eps: Tensor, x_t: Tensor, t: Tensor | int, *, index: Tensor | None = None
    ) -> Tensor:
        """``x̂_0 = (x_t - √(1 - ᾱ_t) ε̂) / √ᾱ_t`` from a predicted ``ε̂`` (``x_t``'s shape)."""
        ab = at_steps(self._alpha_bars, t, x_t, index)
        return (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()

    def posterior(
        self, x0: Tensor, x_t: Tensor, t: Tensor | int, *, index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``q(x_{t-1} | x_t, x_0)`` (module docstring).

        Returns:
            ``(μ̃_t, β̃_t)``: the mean of ``x_t``'s shape and the variance broadcastable to it.
        """
        ab = at_steps(self._alpha_bars, t, x_t, index)
        ab_prev = at_steps(self._alpha_bars, t - 1, x_t, index)
        beta = at_steps(self._betas, t, x_t, index)
        alpha = at_steps(self._alphas, t, x_t, index)
        mean = (ab_prev.sqrt() * beta * x0 + alpha.sqrt() * (1.0 - ab_prev) * x_t) / (1.0 - ab)
        return mean, at_steps(self._posterior_variances, t, x_t, index)

    def reverse_step(
        self,
        eps: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        *,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Ancestral step ``x_{t-1} ~ N(μ̃_t(x̂_0, x_t), β̃_t I)`` from a predicted ``ε̂``.

        Args:
            eps: ``ε̂``, ``x_t``'s shape.
            x_t: ``(N, ...)`` current values.
            t: steps in ``1..T`` (at ``t = 1`` the step is deterministic: ``β̃_1 = 0``).
            generator: random source on ``x_t``'s device.
            index: ``(N,)`` item of each row, or None.
            noise: ``z`` to use instead of a fresh draw.

        Returns:
            ``x_{t-1}``, ``x_t``'s shape.
        """
        z = self._noise(x_t, generator) if noise is None else noise
        ab = at_steps(self._alpha_bars, t, x_t, index)
        beta = at_steps(self._betas, t, x_t, index)
        alpha = at_steps(self._alphas, t, x_t, index)
        mean = (x_t - beta / (1.0 - ab).sqrt() * eps) / alpha.sqrt()
        return mean + at_steps(self._posterior_variances, t, x_t, index).sqrt() * z

    def ddim_step(
        self,
        eps: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        s: Tensor | int,
        generator: torch.Generator | None = None,
        *,
        eta: float = 0.0,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """DDIM jump ``x_t → x_s`` (module docstring) from a predicted ``ε̂``.

        Args:
            eps: ``ε̂``, ``x_t``'s shape.
            x_t: ``(N, ...)`` current values.
            t: current steps in ``1..T``.
            s: target steps, ``0 ≤ s < t`` (same layout as ``t``, or an int); ``s = 0`` returns
                ``x̂_0`` (when ``η = 0``).
            generator: random source on ``x_t``'s device (used when ``η > 0``).
            eta: ``η ≥ 0``; 0 is deterministic, 1 with ``s = t - 1`` is the ancestral step.
            index: ``(N,)`` item of each row, or None.
            noise: ``z`` to use instead of a fresh draw.

        Returns:
            ``x_s``, ``x_t``'s shape.
        """
        ab_t = at_steps(self._alpha_bars, t, x_t, index)
        ab_s = at_steps(self._alpha_bars, s, x_t, index)
        x0 = (x_t - (1.0 - ab_t).sqrt() * eps) / ab_t.sqrt()
        var = eta**2 * (1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s)
        out = ab_s.sqrt() * x0 + (1.0 - ab_s - var).clamp(min=0.0).sqrt() * eps
        if eta > 0.0:
            z = self._noise(x_t, generator) if noise is None else noise
            out = out + var.sqrt() * z
        return out

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``x_T ~ N(0, I)`` of the given shape (``q(x_T | x_0)`` up to ``√ᾱ_T x_0``)."""
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
