"""Schedules: the cosine DDPM schedule, the linear mask schedule, geometric σ, step lookup."""

from __future__ import annotations

import math

import pytest
import torch

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


@pytest.mark.parametrize("timesteps", [1, 10, 1000])
def test_cosine_schedule_is_valid(timesteps):
    s = DDPMSchedule.cosine(timesteps)
    ab = s.alpha_bars
    assert ab.shape == (timesteps,) and ab.dtype == torch.float64
    assert ((ab > 0) & (ab <= 1)).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ((s.betas > 0) & (s.betas <= 0.999 + 1e-12)).all()
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(torch.cumprod(s.alphas, 0), ab)
    assert s.posterior_variances[0] == 0
    assert (s.posterior_variances[1:] > 0).all()
    assert (s.posterior_variances <= s.betas).all()


def test_cosine_matches_its_formula():
    T, off = 1000, 0.008
    f = lambda u: math.cos((u + off) / (1 + off) * math.pi / 2) ** 2  # noqa: E731
    ab = cosine_alpha_bars(T)
    assert ab[499].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-12)
    assert ab[-1].item() < 1e-8  # β clipped at 0.999 on the last step


def test_linear_alpha_bars():
    ab = linear_alpha_bars(4)
    torch.testing.assert_close(ab, torch.tensor([0.75, 0.5, 0.25, 0.0], dtype=torch.float64))


def test_geometric_sigmas():
    sig = geometric_sigmas(1000, 0.005, 0.5)
    assert sig[0].item() == pytest.approx(0.005) and sig[-1].item() == pytest.approx(0.5)
    ratios = sig[1:] / sig[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()))
    u = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(geometric_sigma(u), torch.tensor([0.005, 0.05, 0.5]).double())
    assert geometric_sigmas(1, 0.01, 0.7).tolist() == pytest.approx([0.7])
    with pytest.raises(ValueError, match="sigma_min"):
        geometric_sigmas(10, 0.5, 0.1)


def test_at_steps_layouts():
    table = step_table(torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64), 0.0)
    x = torch.zeros(4, 2, 3, dtype=torch.float32)
    per_row = at_steps(table, torch.tensor([1, 2, 3, 0]), x)
    assert per_row.shape == (4, 1, 1) and per_row.dtype == torch.float32
    assert per_row.flatten().tolist() == [10.0, 20.0, 30.0, 0.0]
    per_item = at_steps(table, torch.tensor([3, 1]), x, torch.tensor([0, 0, 1, 1]))
    assert per_item.flatten().tolist() == [30.0, 30.0, 10.0, 10.0]
    assert at_steps(table, 2, x).item() == 20.0


def test_timestep_helpers():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(10000, 50, generator=g)
    assert t.min().item() == 1 and t.max().item() == 50
    assert torch.equal(t, sample_timesteps(10000, 50, generator=torch.Generator().manual_seed(0)))
    assert spaced_timesteps(1000, 1000) == list(range(1000, 0, -1))
    steps = spaced_timesteps(1000, 50)
    assert steps[0] == 1000 and steps[-1] == 1 and len(steps) == 50
    assert spaced_timesteps(1000, 1) == [1000]
    with pytest.raises(ValueError, match="steps"):
        spaced_timesteps(10, 11)
