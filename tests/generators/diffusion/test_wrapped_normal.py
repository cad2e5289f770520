"""The wrapped normal on [0, 1): normalisation, score against finite differences, agreement of the
image-sum and Fourier representations, periodicity, E[score²] and float32 robustness."""

from __future__ import annotations

import math

import pytest
import torch

from matgen.generators.diffusion import wrapped_normal as wn
from matgen.generators.diffusion.wrapped_normal import (
    FOURIER_SIGMA,
    sample_wrapped_normal,
    wrap_unit,
    wrapped_normal_log_prob,
    wrapped_normal_score,
    wrapped_score_norm,
)

SIGMAS = [0.005, 0.05, 0.3, 0.5, 1.0, 3.0]
F64 = torch.float64


def _displacements(generator: torch.Generator) -> torch.Tensor:
    """Random displacements in [-2, 2] plus points at and near 0, ±1/2 and ±1."""
    special = torch.tensor(
        [0.0, 1e-9, -1e-9, 1e-4, 0.5, 0.5 - 1e-7, -0.5 + 1e-7, 1.0 - 1e-9, -1.0 + 1e-9, 1.0],
        dtype=F64,
    )
    return torch.cat([special, 4.0 * torch.rand(200, generator=generator, dtype=F64) - 2.0])


@pytest.mark.parametrize("sigma", SIGMAS)
def test_density_integrates_to_one(sigma):
    m = 20000  # periodic trapezoid: exponentially accurate once the spacing is well below σ
    x = torch.arange(m, dtype=F64) / m
    integral = torch.exp(wrapped_normal_log_prob(x, sigma)).mean()
    assert integral.item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_score_matches_finite_difference(sigma):
    g = torch.Generator().manual_seed(0)
    x = _displacements(g)
    h = 1e-5 * min(sigma, 1.0) ** 2  # the score varies on a scale σ² near x = 1/2
    fd = (wrapped_normal_log_prob(x + h, sigma) - wrapped_normal_log_prob(x - h, sigma)) / (2 * h)
    score = wrapped_normal_score(x, sigma)
    # relative 1e-6, with an absolute floor at the zero crossings (x = 0, 1/2) and, for large σ,
    # at the size of the score itself (log p is ~1e-77 at σ = 3: its differences lose digits)
    scale = score.abs().max()
    torch.testing.assert_close(score, fd, rtol=1e-6, atol=1e-7 * scale.item())


@pytest.mark.parametrize("sigma", SIGMAS)
def test_score_with_points_near_cell_boundaries(sigma):
    """x_t near 0 or 1 and x_0 anywhere: the score only depends on x_t - x_0 modulo 1."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(50, generator=g, dtype=F64)
    xt = torch.tensor([1e-12, 1e-6, 1.0 - 1e-6, 1.0 - 1e-12], dtype=F64)[:, None]
    score = wrapped_normal_score(xt - x0, sigma)
    shifted = wrapped_normal_score(xt - x0 + 3.0, sigma)
    scale = 1.0 / sigma if sigma < 1 else score.abs().max().item()
    torch.testing.assert_close(score, shifted, rtol=1e-9, atol=1e-12 * scale)
    # crossing the boundary is smooth: x_t = 1 - δ and x_t = -δ are the same point
    torch.testing.assert_close(
        wrapped_normal_score(1.0 - 1e-6 - x0, sigma),
        wrapped_normal_score(-1e-6 - x0, sigma),
        rtol=1e-9,
        atol=1e-12 * scale,
    )


@pytest.mark.parametrize("sigma", [0.15, 0.2, 0.3, 0.35, 0.45, 0.6])
def test_representations_agree_in_overlap(sigma):
    g = torch.Generator().manual_seed(2)
    x = _displacements(g)
    s = torch.full_like(x, sigma)
    images, terms = wn._images_needed(sigma), wn._fourier_terms_needed(sigma)
    torch.testing.assert_close(
        wn._log_prob_images(x, s, images), wn._log_prob_fourier(x, s, terms), rtol=0, atol=1e-13
    )
    si, sf = wn._score_images(x, s, images), wn._score_fourier(x, s, terms)
    torch.testing.assert_close(si, sf, rtol=1e-12, atol=1e-13 * si.abs().max().item())


def test_switch_uses_enough_terms():
    """The fixed image window and Fourier length cover their whole range of σ."""
    assert wn._images_needed(FOURIER_SIGMA) <= wn._NUM_IMAGES
    assert wn._fourier_terms_needed(FOURIER_SIGMA) <= wn._NUM_FOURIER_TERMS
    g = torch.Generator().manual_seed(3)
    x = _displacements(g)
    for sigma in (FOURIER_SIGMA * (1 - 1e-9), FOURIER_SIGMA):
        s = torch.full_like(x, sigma)
        reference = wn._score_images(x, s, 10)
        torch.testing.assert_close(wrapped_normal_score(x, s), reference, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("sigma", [1e-3, 0.01, 0.1, 0.2, 0.3, 0.349, 0.35, 0.4, 0.7, 1.5, 5.0])
def test_matches_long_reference_series(sigma):
    """Public functions against a reference with far more terms than needed (12 images below
    σ = 0.5, 40 Fourier terms above): agreement to round-off."""
    g = torch.Generator().manual_seed(8)
    x = _displacements(g)
    s = torch.full_like(x, sigma)
    if sigma < 0.5:
        logp, score = wn._log_prob_images(x, s, 12), wn._score_images(x, s, 12)
    else:
        logp, score = wn._log_prob_fourier(x, s, 40), wn._score_fourier(x, s, 40)
    torch.testing.assert_close(wrapped_normal_log_prob(x, sigma), logp, rtol=1e-13, atol=1e-13)
    scale = score.abs().max().item()
    torch.testing.assert_close(
        wrapped_normal_score(x, sigma), score, rtol=1e-12, atol=1e-14 * scale
    )


@pytest.mark.parametrize("sigma", SIGMAS)
def test_score_is_periodic_and_odd(sigma):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(100, generator=g, dtype=F64)
    score = wrapped_normal_score(x, sigma)
    scale = 1e-9 * max(score.abs().max().item(), 1e-300)
    torch.testing.assert_close(wrapped_normal_score(x + 1.0, sigma), score, rtol=1e-6, atol=scale)
    torch.testing.assert_close(wrapped_normal_score(x - 2.0, sigma), score, rtol=1e-6, atol=scale)
    torch.testing.assert_close(wrapped_normal_score(-x, sigma), -score, rtol=1e-12, atol=0.0)


def test_small_sigma_is_gaussian():
    x = torch.linspace(-0.2, 0.2, 41, dtype=F64)
    torch.testing.assert_close(wrapped_normal_score(x, 0.01), -x / 0.01**2)


def test_score_norm_matches_monte_carlo():
    g = torch.Generator().manual_seed(5)
    sigmas = torch.tensor([0.005, 0.1, 0.3, 0.5, 1.0], dtype=F64)
    eps = torch.randn(200_000, 1, generator=g, dtype=F64)
    mc = (wrapped_normal_score(sigmas * eps, sigmas) ** 2).mean(0)
    torch.testing.assert_close(wrapped_score_norm(sigmas), mc, rtol=0.02, atol=0.0)


def test_score_norm_quadrature_is_converged():
    sigmas = torch.tensor([0.051, 0.08, 0.2, 0.35, 0.7, 2.0], dtype=F64)
    coarse = wrapped_score_norm(sigmas)
    fine = wn._score_norm_quadrature(sigmas, 16384)
    torch.testing.assert_close(coarse, fine, rtol=1e-13, atol=0.0)
    # continuity at the Gaussian shortcut, and the large-σ asymptote 8π² exp(-4π²σ²)
    below, above = wrapped_score_norm(torch.tensor([0.05, 0.05 + 1e-12], dtype=F64))
    assert (below * 0.05**2).item() == pytest.approx(1.0, abs=1e-14)
    assert (above / below).item() == pytest.approx(1.0, abs=1e-9)
    big = wrapped_score_norm(torch.tensor(1.5, dtype=F64))
    assert big.item() == pytest.approx(
        8 * math.pi**2 * math.exp(-4 * math.pi**2 * 1.5**2), rel=1e-6
    )


def test_score_norm_keeps_shape_dtype():
    sigma = torch.full((2, 3), 0.2, dtype=torch.float32)
    out = wrapped_score_norm(sigma)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    assert wrapped_score_norm(0.1).dtype == F64


@pytest.mark.parametrize("sigma", [1e-4, 0.005, 0.05, 0.34, 0.35, 0.5, 1.0, 3.0, 10.0, 100.0])
def test_float32_is_finite_and_accurate(sigma):
    x64 = torch.linspace(-1.5, 1.5, 3001, dtype=F64)
    x32 = x64.float()
    score32 = wrapped_normal_score(x32, sigma)
    logp32 = wrapped_normal_log_prob(x32, sigma)
    assert torch.isfinite(score32).all() and torch.isfinite(logp32).all()
    # against float64 at the float32-rounded points: the error is round-off relative to the
    # score's scale (|x|/σ² for small σ)
    score64 = wrapped_normal_score(x32.double(), sigma)
    scale = score64.abs().max().item()
    assert (score32.double() - score64).abs().max().item() <= 1e-5 * scale + 1e-30


def test_sampling_is_wrapped_reproducible_and_distributed():
    x0 = torch.tensor([0.02, 0.5, 0.97], dtype=F64).repeat(20000, 1)
    sample = sample_wrapped_normal(x0, 0.3, torch.Generator().manual_seed(6))
    again = sample_wrapped_normal(x0, 0.3, torch.Generator().manual_seed(6))
    assert torch.equal(sample, again)
    assert ((sample >= 0) & (sample < 1)).all()
    # circular mean of x_t - x_0 is E[cos 2πσε] = exp(-2π²σ²)
    d = sample - x0
    assert torch.cos(2 * math.pi * d).mean().item() == pytest.approx(
        math.exp(-2 * math.pi**2 * 0.09), abs=0.01
    )


def test_wrap_unit_maps_tiny_negatives_below_one():
    x = torch.tensor([-1e-9, -1e-30, 1.0, 2.5, -0.25], dtype=torch.float32)
    out = wrap_unit(x)
    assert ((out >= 0) & (out < 1)).all()
    torch.testing.assert_close(out[2:], torch.tensor([0.0, 0.5, 0.75]))


def test_gradient_flows_through_both_branches():
    sigma = torch.tensor([0.1, 0.5], dtype=F64, requires_grad=True)
    x = torch.tensor([0.3, 0.3], dtype=F64, requires_grad=True)
    wrapped_normal_log_prob(x, sigma).sum().backward()
    assert torch.isfinite(sigma.grad).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, wrapped_normal_score(x.detach(), sigma.detach()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1000, generator=g, dtype=F64) * 3 - 1.5
    sigma = torch.exp(torch.rand(1000, generator=g, dtype=F64) * 8 - 6)
    for dtype in (torch.float32, F64):
        cpu = wrapped_normal_score(x.to(dtype), sigma.to(dtype))
        cuda = wrapped_normal_score(x.to(dtype).cuda(), sigma.to(dtype).cuda()).cpu()
        scale = 1.0 / sigma.to(dtype) ** 2
        assert ((cpu - cuda).abs() <= 1e-5 * scale).all()
    torch.testing.assert_close(wrapped_score_norm(sigma.cuda()).cpu(), wrapped_score_norm(sigma))
