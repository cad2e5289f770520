"""Generic diffusion engine on plain tensors: corruption processes, schedules and reverse steps.

Independent of crystals: every process works on ``(N, ...)`` tensors whose rows may belong to
``B`` items of a ragged batch (a per-row graph ``index``), with one time step per item.

* :mod:`.wrapped_normal` — the wrapped normal on the torus [0, 1)^d: log density, score,
  ``E[score²]``, sampling;
* :mod:`.schedules` — cosine, linear and geometric schedules, step tables and time steps;
* :mod:`.gaussian` — DDPM on Euclidean variables: forward, ancestral and DDIM steps;
* :mod:`.torus` — variance-exploding diffusion on the torus: predictor and Langevin corrector;
* :mod:`.discrete` — absorbing-state D3PM on categorical variables.
"""

from __future__ import annotations

from matgen.generators.diffusion.discrete import AbsorbingD3PM
from matgen.generators.diffusion.gaussian import GaussianDDPM
from matgen.generators.diffusion.schedules import (
    DDPMSchedule,
    at_steps,
    cosine_alpha_bars,
    geometric_sigma,
    geometric_sigmas,
    linear_alpha_bars,
    sample_timesteps,
    spaced_timesteps,
    step_table,
)
from matgen.generators.diffusion.torus import TorusDiffusion
from matgen.generators.diffusion.wrapped_normal import (
    FOURIER_SIGMA,
    sample_wrapped_normal,
    wrap_unit,
    wrapped_normal_log_prob,
    wrapped_normal_score,
    wrapped_score_norm,
)

__all__ = [
    "FOURIER_SIGMA",
    "AbsorbingD3PM",
    "DDPMSchedule",
    "GaussianDDPM",
    "TorusDiffusion",
    "at_steps",
    "cosine_alpha_bars",
    "geometric_sigma",
    "geometric_sigmas",
    "linear_alpha_bars",
    "sample_timesteps",
    "sample_wrapped_normal",
    "spaced_timesteps",
    "step_table",
    "wrap_unit",
    "wrapped_normal_log_prob",
    "wrapped_normal_score",
    "wrapped_score_norm",
]
