"""IrrepsLinear equals e3nn's o3.Linear: values, gradients, state dict, in float64 and float32."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from matgen.nn.linear import IrrepsLinear


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("irreps_in", "irreps_out"),
    [
        # several inputs of one irrep feed each output (MACE's message linear)
        ("4x0e + 4x0e + 4x1o + 4x1o + 4x1o + 4x2e + 4x3o", "4x0e + 4x1o + 4x2e + 4x3o"),
        ("5x0e + 3x1o", "2x0e + 6x1o"),  # channel counts change
        ("6x0e", "4x0e + 4x1o"),  # an output without a path: zeros
        ("7x0e", "3x0e"),  # one input irrep: no split
        ("3x1o + 2x0e", "2x0e + 3x1o + 1x2e"),  # unsorted input, output 2e without a path
    ],
)
def test_equals_e3nn_linear(irreps_in, irreps_out, dtype):
    torch.manual_seed(0)
    theirs = o3.Linear(o3.Irreps(irreps_in), o3.Irreps(irreps_out)).to(dtype)
    ours = IrrepsLinear(o3.Irreps(irreps_in), o3.Irreps(irreps_out)).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(2, 9, ours.irreps_in.dim, dtype=dtype, requires_grad=True)
    a, b = ours(x), theirs(x)
    assert a.shape == b.shape == (2, 9, ours.irreps_out.dim)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(a, b, **tol)
    g = torch.randn_like(a)
    for mine, ref in zip(
        torch.autograd.grad(a, [x, ours.weight], g),
        torch.autograd.grad(b, [x, theirs.weight], g),
        strict=True,
    ):
        torch.testing.assert_close(mine, ref, **tol)


def test_second_derivatives_and_external_weights():
    """Double backward (a force loss) matches e3nn; explicit weights take e3nn's own path."""
    torch.manual_seed(1)
    irreps_in, irreps_out = o3.Irreps("3x0e + 3x1o + 3x1o"), o3.Irreps("2x0e + 2x1o")
    theirs = o3.Linear(irreps_in, irreps_out).double()
    ours = IrrepsLinear(irreps_in, irreps_out).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, irreps_in.dim, dtype=torch.float64, requires_grad=True)
    results = []
    for module in (ours, theirs):
        (gx,) = torch.autograd.grad(module(x).pow(2).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.pow(3).sum(), [x, module.weight]))
    for mine, ref in zip(*results, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(ours.weight_numel, dtype=torch.float64)
    torch.testing.assert_close(ours(x, w), theirs(x, w), rtol=1e-12, atol=1e-12)
