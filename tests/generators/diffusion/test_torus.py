"""Variance-exploding diffusion on the torus: forward draws, the predictor's posterior moments,
exact-score sampling, the Langevin corrector's stationary law, and reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from matgen.generators.diffusion import TorusDiffusion, spaced_timesteps, wrapped_normal_score

F64 = torch.float64


def _circular(d: torch.Tensor) -> torch.Tensor:
    """Representative of ``d`` modulo 1 in [-1/2, 1/2)."""
    return d - torch.round(d)


@pytest.fixture(scope="module")
def torus():
    return TorusDiffusion(100, sigma_min=0.005, sigma_max=0.5)


def test_buffers(torus):
    assert torus.sigmas.shape == (100,) and torus.score_norms.shape == (100,)
    assert torus.sigmas[0].item() == pytest.approx(0.005)
    assert torus.sigmas[-1].item() == pytest.approx(0.5)
    assert torus.score_norms[0].item() == pytest.approx(1 / 0.005**2, rel=1e-12)


def test_q_sample_and_score_target(torus):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(500, 3, generator=g, dtype=F64)
    t = torch.randint(1, 101, (5,), generator=g)
    index = torch.arange(5).repeat_interleave(100)
    xt, score = torus.q_sample(x0, t, g, index=index)
    assert ((xt >= 0) & (xt < 1)).all()
    sigma = torus.sigma(t, x0, index=index)
    expected = wrapped_normal_score(xt - x0, sigma)
    torch.testing.assert_close(score, expected, rtol=1e-6, atol=1e-6 / sigma.min().item())
    scaled = score / torus.score_scale(t, x0, index=index)
    assert scaled.pow(2).mean().item() == pytest.approx(1.0, rel=0.1)


def test_predictor_moments_are_the_posterior(torus):
    """Small σ, exact Gaussian score of one clean point: mean and variance of the jump are those
    of q(x_s | x_t, x_0) = N((σ_s² x_t + Δ x_0)/σ_t², σ_s² Δ/σ_t²)."""
    g = torch.Generator().manual_seed(1)
    x0 = 0.3 + 0.4 * torch.rand(64, 3, generator=g, dtype=F64)
    for t, s in ((20, 19), (30, 12), (5, 0)):
        st, ss = torus.sigmas[t - 1], (torus.sigmas[s - 1] if s else torch.tensor(0.0, dtype=F64))
        xt = x0 + st * torch.randn(64, 3, generator=g, dtype=F64)
        score = -(xt - x0) / st**2
        z = torch.randn(64, 3, generator=g, dtype=F64)
        out = torus.predictor_step(score, xt, t, s, noise=z)
        jump = st**2 - ss**2
        mean = (ss**2 * xt + jump * x0) / st**2
        torch.testing.assert_close(out, mean + (ss**2 * jump / st**2).sqrt() * z)


def test_exact_score_chain_keeps_the_marginals(torus):
    """Data = one point x_0; starting from p_{σ_T}(· - x_0), predictor steps with the exact score
    give x_s - x_0 ~ wrapped normal with σ_s at every step."""
    g = torch.Generator().manual_seed(2)
    n = 20000
    x0 = torch.full((n, 1), 0.9, dtype=F64)
    x = torus.q_sample(x0, 100, g)[0]
    for t in range(100, 40, -1):
        x = torus.predictor_step(wrapped_normal_score(x - x0, torus.sigmas[t - 1]), x, t, None, g)
    sigma = torus.sigmas[39].item()
    d = _circular(x - x0)
    assert d.std().item() == pytest.approx(sigma, rel=0.03)
    assert torch.cos(2 * math.pi * d).mean().item() == pytest.approx(
        math.exp(-2 * math.pi**2 * sigma**2), abs=0.01
    )


@pytest.mark.parametrize("steps", [100, 20])
def test_exact_score_sampling_recovers_the_point(torus, steps):
    g = torch.Generator().manual_seed(3)
    x0 = torch.tensor([[0.0, 0.5, 0.999]], dtype=F64).expand(200, 3)
    x = torus.prior_sample((200, 3), g, dtype=F64)
    times = spaced_timesteps(100, steps)
    for k, t in enumerate(times):
        s = times[k + 1] if k + 1 < len(times) else 0
        sigma = torus.sigmas[t - 1]
        x = torus.corrector_step(
            wrapped_normal_score(x - x0, sigma), x, t, g, gamma=1e-5 * torus.sigmas[0] ** 2
        )
        x = torus.predictor_step(wrapped_normal_score(x - x0, sigma), x, t, s, g)
    assert ((x >= 0) & (x < 1)).all()
    assert _circular(x - x0).abs().max().item() < 1e-9


def test_corrector_targets_the_noised_law(torus):
    """Langevin steps with the exact score of p_{σ_t}(· - x_0) relax a wrong start to σ_t."""
    g = torch.Generator().manual_seed(4)
    t, n = 60, 4000
    sigma = torus.sigmas[t - 1].item()
    x0 = torch.full((n, 1), 0.25, dtype=F64)
    x = x0 + 3 * sigma * (torch.rand(n, 1, generator=g, dtype=F64) - 0.5)  # std 0.87 σ
    gamma = 0.02 * torus.sigmas[0].item() ** 2  # δ = 0.02 σ_t²
    for _ in range(400):
        score = wrapped_normal_score(x - x0, sigma)
        x = torus.corrector_step(score, x, t, g, gamma=gamma)
    assert _circular(x - x0).std().item() == pytest.approx(sigma * math.sqrt(1 / 0.99), rel=0.04)


def test_seeded_sampling_is_reproducible(torus):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        x = torus.prior_sample((10, 3), g)
        for t in (100, 99, 98):
            x = torus.corrector_step(-x, x, t, g, gamma=1e-5)
            x = torus.predictor_step(-x, x, t, None, g)
        return x

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert run(0).dtype == torch.float32


def test_validation():
    with pytest.raises(ValueError, match="shape"):
        TorusDiffusion(10, sigmas=torch.linspace(0.01, 0.5, 9))
    with pytest.raises(ValueError, match="non-decreasing"):
        TorusDiffusion(3, sigmas=torch.tensor([0.3, 0.2, 0.5]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(torus):
    g = torch.Generator().manual_seed(5)
    x, score, z = (torch.rand(50, 3, generator=g) for _ in range(3))
    t = torch.randint(1, 101, (50,), generator=g)
    cuda = TorusDiffusion(100).cuda()
    a = torus.predictor_step(score, x, t, noise=z)
    b = cuda.predictor_step(score.cuda(), x.cuda(), t.cuda(), noise=z.cuda()).cpu()
    torch.testing.assert_close(_circular(a - b), torch.zeros_like(a), rtol=0, atol=1e-5)
