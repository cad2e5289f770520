"""DDPM on a Euclidean variable: forward marginals, posterior, ancestral and DDIM steps."""

from __future__ import annotations

import pytest
import torch

from matgen.generators.diffusion import GaussianDDPM, spaced_timesteps

F64 = torch.float64


@pytest.fixture(scope="module")
def ddpm():
    return GaussianDDPM(1000)


def test_forward_marginal_moments(ddpm):
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([[1.5, -2.0, 0.3]], dtype=F64).expand(100_000, 3)
    for t in (10, 500, 990):
        xt, eps = ddpm.q_sample(x0, t, g)
        ab = ddpm.schedule.alpha_bars[t - 1]
        torch.testing.assert_close(xt.mean(0), ab.sqrt() * x0[0], rtol=0, atol=0.015)
        torch.testing.assert_close(
            xt.var(0), (1 - ab).expand(3), rtol=0.02, atol=1e-4 * (1 - ab).item()
        )
        torch.testing.assert_close(xt, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)


def test_ragged_batch_index(ddpm):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, 3, generator=g, dtype=F64)
    t_item, index = torch.tensor([7, 300]), torch.tensor([0, 0, 1, 1, 1])
    noise = torch.randn(5, 3, 3, generator=g, dtype=F64)
    a, _ = ddpm.q_sample(x0, t_item, index=index, noise=noise)
    b, _ = ddpm.q_sample(x0, t_item[index], noise=noise)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("t", [1, 2, 50, 999, 1000])
def test_reverse_step_mean_is_posterior_mean_with_true_eps(ddpm, t):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(6, 3, 3, generator=g, dtype=F64)
    xt, eps = ddpm.q_sample(x0, t, g)
    mean, var = ddpm.posterior(x0, xt, t)
    zero = torch.zeros_like(xt)
    step = ddpm.reverse_step(eps, xt, t, noise=zero)
    torch.testing.assert_close(step, mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ddpm.predict_x0(eps, xt, t), x0, rtol=1e-6, atol=1e-6)
    z = torch.randn(xt.shape, generator=g, dtype=F64)
    torch.testing.assert_close(ddpm.reverse_step(eps, xt, t, noise=z), mean + var.sqrt() * z)


def test_posterior_is_bayes_rule(ddpm):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): Gaussian product, per coordinate."""
    t = 400
    s = ddpm.schedule
    ab_prev, ab, beta = s.alpha_bars[t - 2], s.alpha_bars[t - 1], s.betas[t - 1]
    x0, xt = torch.tensor([0.7], dtype=F64), torch.tensor([-0.4], dtype=F64)
    # precision-weighted combination of N(x_t/√α_t, β_t/α_t) and N(√ᾱ_{t-1} x0, 1-ᾱ_{t-1})
    alpha = 1 - beta
    p1, m1 = alpha / beta, xt / alpha.sqrt()
    p2, m2 = 1 / (1 - ab_prev), ab_prev.sqrt() * x0
    mean, var = ddpm.posterior(x0, xt, t)
    torch.testing.assert_close(var.reshape(()), 1 / (p1 + p2))
    torch.testing.assert_close(mean, (p1 * m1 + p2 * m2) / (p1 + p2))
    assert ab < ab_prev


@pytest.mark.parametrize("steps", [1000, 50, 7, 1])
def test_ddim_eta0_with_true_eps_reconstructs_x0(ddpm, steps):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 3, 3, generator=g, dtype=F64)
    eps = torch.randn(4, 3, 3, generator=g, dtype=F64)
    times = spaced_timesteps(1000, steps)
    x, _ = ddpm.q_sample(x0, times[0], noise=eps)
    for k, t in enumerate(times):
        s = times[k + 1] if k + 1 < len(times) else 0
        x = ddpm.ddim_step(eps, x, t, s)
        if s > 0:  # every intermediate point lies on the same noise path
            torch.testing.assert_close(x, ddpm.q_sample(x0, s, noise=eps)[0])
    torch.testing.assert_close(x, x0, rtol=1e-8, atol=1e-8)


def test_ddim_eta1_single_step_is_ancestral(ddpm):
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(8, 3, generator=g, dtype=F64)
    t = torch.randint(2, 1001, (8,), generator=g)
    xt, eps = ddpm.q_sample(x0, t, g)
    eps_hat = eps + 0.1 * torch.randn(8, 3, generator=g, dtype=F64)
    a = ddpm.ddim_step(eps_hat, xt, t, t - 1, torch.Generator().manual_seed(5), eta=1.0)
    b = ddpm.reverse_step(eps_hat, xt, t, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_seeded_sampling_is_reproducible(ddpm):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        x = ddpm.prior_sample((3, 3, 3), g, dtype=torch.float32)
        for t in (1000, 999, 998):
            x = ddpm.reverse_step(0.5 * x, x, t, g)
        return x

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_float32_and_validation():
    ddpm = GaussianDDPM(100)
    x0 = torch.randn(2, 3)
    xt, eps = ddpm.q_sample(x0, torch.tensor([3, 90]))
    assert xt.dtype == torch.float32 and ddpm.reverse_step(eps, xt, 90).dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        GaussianDDPM(10, alpha_bars=torch.linspace(0.9, 0.1, 9))
    with pytest.raises(ValueError, match="decrease"):
        GaussianDDPM(3, alpha_bars=torch.tensor([0.5, 0.6, 0.1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(ddpm):
    g = torch.Generator().manual_seed(6)
    x0, eps = torch.randn(5, 3, 3, generator=g), torch.randn(5, 3, 3, generator=g)
    t = torch.tensor([1, 10, 100, 500, 1000])
    cuda = GaussianDDPM(1000).cuda()
    cpu_x, _ = ddpm.q_sample(x0, t, noise=eps)
    gpu_x, _ = cuda.q_sample(x0.cuda(), t.cuda(), noise=eps.cuda())
    torch.testing.assert_close(gpu_x.cpu(), cpu_x)
    torch.testing.assert_close(
        cuda.ddim_step(eps.cuda(), gpu_x, t.cuda(), t.cuda() - 1).cpu(),
        ddpm.ddim_step(eps, cpu_x, t, t - 1),
        rtol=1e-4,
        atol=1e-4,
    )
