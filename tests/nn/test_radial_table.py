"""RadialTable: values and derivatives against the exact functions, the kernels against the
differentiable path, gradient checks, and the build's refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matgen.nn.radial import RadialEmbedding, RadialMLP
from matgen.nn.radial_table import RadialTable

LO, HI = 0.5, 5.0


@pytest.fixture(scope="module")
def function():
    """Bessel features and two radial MLPs of different widths, as in a MACE model."""
    torch.manual_seed(3)
    radial = RadialEmbedding(HI, 8, 5).double()
    mlps = [RadialMLP([8, 32, 32, width], torch.nn.functional.silu).double() for width in (24, 40)]

    def f(r):
        feats = radial(r)
        return [mlp(feats) for mlp in mlps]

    return f


@pytest.fixture(scope="module")
def table(function):
    return RadialTable.build(function, LO, HI)


def _lengths(n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (LO + (HI - LO) * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_derivatives_match_the_functions(function, dtype):
    table = RadialTable.build(function, LO, HI, dtype=dtype)
    assert table.max_error <= 1e-10 and table.cells >= 256
    r = _lengths(3000, dtype).requires_grad_(True)
    values = table(r)
    exact_r = r.detach().double().requires_grad_(True)
    exact = function(exact_r)
    g = [torch.randn(v.shape, dtype=torch.float64) for v in exact]
    (slope,) = torch.autograd.grad(values, r, [x.to(dtype) for x in g])
    (exact_slope,) = torch.autograd.grad(exact, exact_r, g)
    value_tol, slope_tol = (1e-10, 1e-8) if dtype == torch.float64 else (1e-6, 1e-5)
    for v, e in zip(values, exact, strict=True):
        assert v.dtype == dtype and v.shape == e.shape
        err = (v.double() - e).abs().amax(dim=0) / e.abs().amax(dim=0)
        assert float(err.detach().max()) < value_tol
    err = (slope.double() - exact_slope).abs().max() / exact_slope.abs().max()
    assert float(err) < slope_tol


def test_more_cells_when_asked_for_less_error(function):
    coarse = RadialTable.build(function, LO, HI, tol=1e-6)
    fine = RadialTable.build(function, LO, HI, tol=1e-12)
    assert coarse.cells < fine.cells and fine.max_error <= 1e-12 < coarse.max_error <= 1e-6


def test_gradients_and_second_derivatives_check(table):
    r = _lengths(40, torch.float64, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: table(x), (r,))
    # a second derivative (a force loss) runs as eager operations
    assert torch.autograd.gradgradcheck(lambda x: table(x), (r,))


def test_kernel_backward_equals_the_eager_one(table):
    r = _lengths(5000, torch.float64, seed=2).requires_grad_(True)
    values = table(r)
    g = [torch.randn_like(v) for v in values]
    (kernel,) = torch.autograd.grad(values, r, g, retain_graph=True)
    (eager,) = torch.autograd.grad(values, r, g, create_graph=True)
    torch.testing.assert_close(kernel, eager.detach(), rtol=1e-12, atol=1e-12)
    # one group's gradient alone
    (first,) = torch.autograd.grad(values[0], r, g[0])
    (first_eager,) = torch.autograd.grad(table(r)[0], r, g[0], create_graph=True)
    torch.testing.assert_close(first, first_eager.detach(), rtol=1e-12, atol=1e-12)


def test_threads_split_the_edges_without_changing_them(table):
    r = _lengths(20000, torch.float64, seed=4).requires_grad_(True)
    results = []
    previous = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            values = table(r)
            (grad,) = torch.autograd.grad(values, r, [torch.ones_like(v) for v in values])
        finally:
            torch.set_num_threads(previous)
        results.append((values, grad))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(results[0][1], results[1][1])


def test_nodes_are_exact_and_covers(table, function):
    nodes = torch.linspace(LO, HI, table.cells + 1, dtype=torch.float64)
    for v, e in zip(table(nodes), function(nodes), strict=True):
        torch.testing.assert_close(v, e.detach(), rtol=1e-12, atol=1e-12)
    assert table.covers(torch.tensor([LO, HI], dtype=torch.float64))
    assert not table.covers(torch.tensor([0.3, 1.0], dtype=torch.float64))
    assert table.covers(torch.zeros(0, dtype=torch.float64))


def test_builds_without_grad_mode(function, table):
    with torch.no_grad():
        again = RadialTable.build(function, LO, HI)
    assert again.cells == table.cells
    for a, b in zip(again.coefficients, table.coefficients, strict=True):
        np.testing.assert_array_equal(a, b)


def test_refusals(function, table):
    assert RadialTable.build(function, LO, HI, max_bytes=1000) is None
    with pytest.raises(ValueError, match="0 < lo < hi"):
        RadialTable.build(function, 2.0, 1.0)
    with pytest.raises(TypeError, match="float64"):
        table(torch.ones(3, dtype=torch.float32))
    assert table.nbytes == sum(c.nbytes for c in table.coefficients)
    assert np.isfinite(table.max_error)
