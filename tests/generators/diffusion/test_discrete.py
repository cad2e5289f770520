"""Absorbing-state D3PM: forward law, posterior against brute-force Bayes rule, the
x0-parameterised reverse, the losses, exact sampling with a perfect predictor, fixed tokens."""

from __future__ import annotations

import pytest
import torch

from matgen.generators.diffusion import AbsorbingD3PM, cosine_alpha_bars, spaced_timesteps

F64 = torch.float64
K, T = 3, 6


def _processes():
    return [AbsorbingD3PM(K, T), AbsorbingD3PM(K, T, alpha_bars=cosine_alpha_bars(T))]


def _one_step_matrix(d3pm: AbsorbingD3PM, t: int) -> torch.Tensor:
    """Q_t[i, j] = q(x_t = j | x_{t-1} = i)."""
    table = torch.cat([torch.ones(1, dtype=F64), d3pm.alpha_bars])
    alpha = table[t] / table[t - 1]
    q = torch.zeros(K + 1, K + 1, dtype=F64)
    q[torch.arange(K), torch.arange(K)] = alpha
    q[:K, K] = 1 - alpha
    q[K, K] = 1.0
    return q


def _product(d3pm: AbsorbingD3PM, s: int, t: int) -> torch.Tensor:
    """Q_{s→t} = Q_{s+1} ... Q_t, the law of x_t given x_s."""
    out = torch.eye(K + 1, dtype=F64)
    for r in range(s + 1, t + 1):
        out = out @ _one_step_matrix(d3pm, r)
    return out


@pytest.mark.parametrize("d3pm", _processes())
def test_forward_law(d3pm):
    x0 = torch.arange(K).repeat(T)
    t = torch.arange(1, T + 1).repeat_interleave(K)
    probs = d3pm.q_probs(x0, t, dtype=F64)
    torch.testing.assert_close(probs.sum(-1), torch.ones(K * T, dtype=F64))
    for row, (i, step) in enumerate(zip(x0.tolist(), t.tolist(), strict=True)):
        torch.testing.assert_close(probs[row], _product(d3pm, 0, step)[i])
    g = torch.Generator().manual_seed(0)
    draws = d3pm.q_sample(torch.zeros(100_000, dtype=torch.long), 3, g)
    assert set(draws.unique().tolist()) <= {0, K}
    kept = (draws == 0).double().mean().item()
    assert kept == pytest.approx(d3pm.alpha_bars[2].item(), abs=0.005)


@pytest.mark.parametrize("d3pm", _processes())
@pytest.mark.parametrize("jump", [1, 2, 5])
def test_posterior_is_bayes_rule(d3pm, jump):
    """q(x_s | x_t, x_0) = Q_{s→t}[x_s, x_t] Q_{0→s}[x_0, x_s] / Q_{0→t}[x_0, x_t]."""
    for t in range(jump, T + 1):
        s = t - jump
        before, between, total = _product(d3pm, 0, s), _product(d3pm, s, t), _product(d3pm, 0, t)
        for i in range(K):
            for j in range(K + 1):
                if total[i, j] == 0:
                    continue  # x_t impossible given x_0
                expected = between[:, j] * before[i] / total[i, j]
                got = d3pm.posterior_probs(
                    torch.tensor([j]), torch.tensor([i]), t, None if jump == 1 else s, dtype=F64
                )[0]
                torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("d3pm", _processes())
def test_reverse_with_true_x0_is_the_posterior(d3pm):
    x0 = torch.arange(K).repeat(2 * T)
    t = torch.arange(1, T + 1).repeat_interleave(2 * K)
    xt = torch.where(torch.arange(2 * K * T) % 2 == 0, x0, torch.full_like(x0, K))
    logits = torch.log(torch.nn.functional.one_hot(x0, K).to(F64))  # 0 and -inf
    for s in (None, torch.zeros_like(t)):
        reverse = d3pm.reverse_probs(logits, xt, t, s)
        torch.testing.assert_close(reverse, d3pm.posterior_probs(xt, x0, t, s, dtype=F64))


@pytest.mark.parametrize("d3pm", _processes())
def test_vb_loss_is_the_kl(d3pm):
    g = torch.Generator().manual_seed(1)
    n = 4 * T
    x0 = torch.randint(0, K, (n,), generator=g)
    t = torch.arange(1, T + 1).repeat(4)
    xt = d3pm.q_sample(x0, t, g)
    xt[:T] = K  # make sure masked rows at every t are covered
    logits = torch.randn(n, K, generator=g, dtype=F64)
    vb, ce = d3pm.loss(logits, x0, xt, t, reduction="none")
    q = d3pm.posterior_probs(xt, x0, t, dtype=F64)
    p = d3pm.reverse_probs(logits, xt, t)
    kl = (torch.xlogy(q, q) - torch.xlogy(q, p)).sum(-1)
    torch.testing.assert_close(vb, kl)
    # at t = 1 the term is the reconstruction -log p(x_0 | x_1)
    first = t == 1
    torch.testing.assert_close(vb[first], -torch.log(p[first, x0[first]]))
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits, x0, reduction="none"))
    mean_vb, mean_ce = d3pm.loss(logits, x0, xt, t)
    torch.testing.assert_close(mean_vb, vb.mean())
    torch.testing.assert_close(mean_ce, ce.mean())


@pytest.mark.parametrize("steps", [50, 7, 1])
def test_perfect_predictor_recovers_x0(steps):
    d3pm = AbsorbingD3PM(5, 50)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 5, (300,), generator=g)
    logits = torch.full((300, 5), -1e9).scatter(1, x0[:, None], 0.0)
    x = d3pm.prior_sample(300)
    times = spaced_timesteps(50, steps)
    for k, t in enumerate(times):
        s = times[k + 1] if k + 1 < len(times) else 0
        x = d3pm.reverse_jump(logits, x, torch.full((300,), t), s, g)
        assert ((x == x0) | (x == d3pm.mask_index)).all()
    assert torch.equal(x, x0)


def test_fixed_and_unmasked_tokens_never_change():
    d3pm = AbsorbingD3PM(4, 20)
    g = torch.Generator().manual_seed(3)
    n = 400
    index = torch.arange(8).repeat_interleave(50)
    fixed = torch.rand(n, generator=g) < 0.3
    given = torch.randint(0, 4, (n,), generator=g)
    x = torch.where(fixed, given, torch.full_like(given, 4))
    for t in range(20, 0, -1):
        logits = torch.randn(n, 4, generator=g)
        new = d3pm.reverse_jump(logits, x, torch.full((8,), t), None, g, index=index, fixed=fixed)
        assert torch.equal(new[fixed], given[fixed])
        unmasked = x != 4
        assert torch.equal(new[unmasked], x[unmasked])
        x = new
    assert (x != 4).all()


def test_seeded_sampling_is_reproducible():
    d3pm = AbsorbingD3PM(6, 30)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        x = d3pm.prior_sample(200)
        for t in range(30, 0, -1):
            x = d3pm.reverse_jump(torch.randn(200, 6, generator=g), x, t, None, g)
        return x

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_validation():
    d3pm = AbsorbingD3PM(3, 10)
    with pytest.raises(ValueError, match="no mask"):
        d3pm.reverse_probs(torch.zeros(2, 4), torch.tensor([3, 3]), 5)
    with pytest.raises(ValueError, match="reduction"):
        d3pm.loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([3, 3]), 5, reduction="x")
    with pytest.raises(ValueError, match="non-increasing"):
        AbsorbingD3PM(3, 3, alpha_bars=torch.tensor([0.5, 0.7, 0.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    d3pm = AbsorbingD3PM(5, 50)
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(100, 5, generator=g)
    xt = torch.full((100,), 5)
    t = torch.randint(1, 51, (100,), generator=g)
    cpu = d3pm.reverse_probs(logits, xt, t)
    gpu = d3pm.cuda().reverse_probs(logits.cuda(), xt.cuda(), t.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu)
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = d3pm.reverse_jump(logits.cuda(), xt.cuda(), t.cuda(), None, gen)
    b = d3pm.reverse_jump(logits.cuda(), xt.cuda(), t.cuda(), None, gen.manual_seed(0))
    assert torch.equal(a, b)
