"""Variance-exploding diffusion on the unit torus [0, 1)^d (DiffCSP's fractional coordinates).

Forward process: ``x_t = (x_0 + σ_t ε) mod 1`` with ``ε ~ N(0, I)`` and an increasing schedule
``σ_1 < ... < σ_T`` (``σ_0 = 0``), so ``p(x_t | x_0) = Π_i p_{σ_t}(x_{t,i} - x_{0,i})`` with the
wrapped normal ``p_σ`` of :mod:`~matgen.generators.diffusion.wrapped_normal`; the prior is uniform
on the torus when ``σ_T`` is large enough (``σ_T = 0.5`` leaves a density ``1 ± 1.4e-2``).
One step adds independent noise of variance ``σ_t² - σ_{t-1}²``.

Training target: the score ``∇_{x_t} log p(x_t | x_0) = s_{σ_t}(x_t - x_0)`` (DiffCSP regresses
it divided by ``√λ(σ_t)``, ``λ = E[s²]``; :meth:`TorusDiffusion.score_scale`).

Predictor (the ancestral / reverse-diffusion step of Song et al. 2021 for VE processes), jump
``t → s < t`` with ``Δ = σ_t² - σ_s²``:
``x_s = (x_t + Δ ŝ + √(σ_s² Δ / σ_t²) z) mod 1``. With the exact score of a single clean point
(the Gaussian, unwrapped), its mean and variance are those of the posterior
``q(x_s | x_t, x_0) = N(x_t + Δ ŝ, σ_s² Δ / σ_t²)``.

Corrector (Langevin dynamics at level ``σ_t``, DiffCSP's step-size rule):
``x ← (x + δ ŝ + √(2δ) z) mod 1`` with ``δ = γ (σ_t / σ_1)²``.

``ŝ`` is the network's score estimate at ``(x_t, t)``, already multiplied back by ``√λ(σ_t)``
if the network predicts the normalised score.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from matgen.generators.diffusion.schedules import at_steps, geometric_sigmas, step_table
from matgen.generators.diffusion.wrapped_normal import (
    wrap_unit,
    wrapped_normal_score,
    wrapped_score_norm,
)

__all__ = ["TorusDiffusion"]


class TorusDiffusion(nn.Module):
    """Variance-exploding wrapped-normal diffusion on [0, 1)^d with predictor and corrector steps.

    Holds ``σ_t`` and ``λ(σ_t) = E[s_{σ_t}²]`` as non-persistent float64 buffers (cast to the
    data's dtype at each use).

    Args:
        timesteps: ``T``.
        sigma_min, sigma_max: ``σ_1`` and ``σ_T`` of the geometric schedule.
        sigmas: ``(T,)`` increasing ``σ_1 .. σ_T`` to use instead of the geometric schedule.
    """

    def __init__(
        self,
        timesteps: int = 1000,
        *,
        sigma_min: float = 0.005,
        sigma_max: float = 0.5,
        sigmas: Tensor | None = None,
    ) -> None:
        super().__init__()
        if sigmas is None:
            sigmas = geometric_sigmas(timesteps, sigma_min, sigma_max)
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
        if sigmas.shape != (timesteps,):
            raise ValueError(f"sigmas must have shape ({timesteps},), got {sigmas.shape}")
        if not bool((sigmas > 0).all() and (sigmas[1:] >= sigmas[:-1]).all()):
            raise ValueError("sigmas must be positive and non-decreasing")
        self.timesteps = timesteps
        self.register_buffer("_sigmas", step_table(sigmas, 0.0), persistent=False)
        norms = wrapped_score_norm(sigmas)
        self.register_buffer("_score_norms", step_table(norms, 1.0), persistent=False)

    @property
    def sigmas(self) -> Tensor:
        """``(T,)`` ``σ_1 .. σ_T``."""
        return self._sigmas[1:]

    @property
    def score_norms(self) -> Tensor:
        """``(T,)`` ``λ(σ_t) = E[s_{σ_t}²]`` per coordinate."""
        return self._score_norms[1:]

    def _noise(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)

    def sigma(self, t: Tensor | int, like: Tensor, *, index: Tensor | None = None) -> Tensor:
        """``σ_t`` per row, shaped to broadcast against ``like`` (``σ_0 = 0``)."""
        return at_steps(self._sigmas, t, like, index)

    def score_scale(self, t: Tensor | int, like: Tensor, *, index: Tensor | None = None) -> Tensor:
        """``√λ(σ_t)`` per row, shaped to broadcast against ``like``: the factor between the
        score and DiffCSP's normalised regression target."""
        return at_steps(self._score_norms, t, like, index).sqrt()

    def q_sample(
        self,
        x0: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        *,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``x_t ~ p(x_t | x_0)`` and its score.

        Args:
            x0: ``(N, d)`` clean points (read modulo 1).
            t: steps in ``1..T`` (per row, per item with ``index``, or an int).
            generator: random source on ``x0``'s device.
            index: ``(N,)`` item of each row, or None.
            noise: ``ε`` to use instead of a fresh draw.

        Returns:
            ``(x_t, score)``: ``x_t`` in [0, 1) and ``∇_{x_t} log p(x_t | x_0)``, both ``x0``'s
            shape (the score is computed from ``σ_t ε``, free of the wrapping's round-off).
        """
        eps = self._noise(x0, generator) if noise is None else noise
        sigma = at_steps(self._sigmas, t, x0, index)
        displacement = sigma * eps
        return wrap_unit(x0 + displacement), wrapped_normal_score(displacement, sigma)

    def predictor_step(
        self,
        score: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        s: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        *,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Reverse-diffusion jump ``t → s``: ``x_s = (x_t + Δ ŝ + √(σ_s² Δ / σ_t²) z) mod 1``.

        Args:
            score: ``ŝ ≈ ∇ log p_t(x_t)``, ``x_t``'s shape (unnormalised).
            x_t: ``(N, d)`` current points.
            t: current steps in ``1..T``.
            s: target steps ``0 ≤ s < t`` (same layout as ``t``, or an int); None: ``t - 1``.
                The jump to ``s = 0`` adds no noise.
            generator: random source on ``x_t``'s device.
            index: ``(N,)`` item of each row, or None.
            noise: ``z`` to use instead of a fresh draw.

        Returns:
            ``x_s`` in [0, 1), ``x_t``'s shape.
        """
        s = t - 1 if s is None else s
        z = self._noise(x_t, generator) if noise is None else noise
        var_t = at_steps(self._sigmas, t, x_t, index) ** 2
        var_s = at_steps(self._sigmas, s, x_t, index) ** 2
        jump = var_t - var_s
        return wrap_unit(x_t + jump * score + (var_s * jump / var_t).sqrt() * z)

    def corrector_step(
        self,
        score: Tensor,
        x: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        *,
        gamma: float,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Langevin step at level ``σ_t``: ``x ← (x + δ ŝ + √(2δ) z) mod 1``, ``δ = γ (σ_t/σ_1)²``.

        Args:
            score: ``ŝ ≈ ∇ log p_t(x)``, ``x``'s shape (unnormalised).
            x: ``(N, d)`` current points.
            t: steps in ``1..T`` whose noise level the chain targets.
            generator: random source on ``x``'s device.
            gamma: ``γ > 0``, the step at ``σ_1`` (DiffCSP uses about 1e-5).
            index: ``(N,)`` item of each row, or None.
            noise: ``z`` to use instead of a fresh draw.

        Returns:
            The moved points in [0, 1), ``x``'s shape.
        """
        z = self._noise(x, generator) if noise is None else noise
        sigma_1 = self._sigmas[1].to(dtype=x.dtype, device=x.device)
        step = gamma * (at_steps(self._sigmas, t, x, index) / sigma_1) ** 2
        return wrap_unit(x + step * score + (2.0 * step).sqrt() * z)

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``x_T`` uniform on [0, 1)^d, of the given shape."""
        return torch.rand(shape, generator=generator, dtype=dtype, device=device)
