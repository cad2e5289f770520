"""The element-grouped evaluation of the skip connection equals e3nn's tensor product with the
element one-hot: values and gradients, in float64 and float32."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from matgen.nn.element_linear import ElementLinear


@pytest.fixture(autouse=True)
def _build_in_float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("irreps_in", "irreps_out"),
    [
        ("8x0e + 8x1o + 8x2e + 8x3o", "8x0e + 8x1o + 8x2e + 8x3o"),
        ("8x0e + 8x1o", "8x0e"),
        ("6x0e", "4x0e + 4x1o"),  # 1o has no path: e3nn's evaluation
    ],
)
def test_equals_e3nn_with_the_one_hot(irreps_in, irreps_out, dtype):
    torch.manual_seed(0)
    module = ElementLinear(o3.Irreps(irreps_in), 11, o3.Irreps(irreps_out)).to(dtype)
    species = torch.randint(0, 11, (40,))
    species[:12] = 4  # one element many times, others once or not at all
    one_hot = torch.nn.functional.one_hot(species, 11).to(dtype)
    x = torch.randn(40, module.irreps_in1.dim, dtype=dtype, requires_grad=True)
    ours = module(x, one_hot)
    theirs = o3.FullyConnectedTensorProduct.forward(module, x, one_hot)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(ours, theirs, **tol)
    g = torch.randn_like(ours)
    for a, b in zip(
        torch.autograd.grad(ours, [x, module.weight], g),
        torch.autograd.grad(theirs, [x, module.weight], g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_kernel_equals_the_grouped_operations(dtype, kernel_threads):
    """Evaluation mode runs the compiled kernel, training mode the grouped matrix products:
    values, gradients and second derivatives agree (an input irrep without a path included)."""
    torch.manual_seed(0)
    module = ElementLinear(o3.Irreps("8x0e + 8x1o + 8x2e"), 7, o3.Irreps("8x0e + 8x2e")).to(dtype)
    species = torch.tensor([0, 6, 6, 2, 2, 2, 5, 0, 1])
    one_hot = torch.nn.functional.one_hot(species, 7).to(dtype)
    x = torch.randn(9, module.irreps_in1.dim, dtype=dtype, requires_grad=True)
    results = []
    for training in (False, True):
        module.train(training)
        out = module(x, one_hot)
        g = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        first = torch.autograd.grad(out, [x, module.weight], g, retain_graph=True)
        gx, gw = torch.autograd.grad(out, [x, module.weight], g, create_graph=True)
        second = torch.autograd.grad(gx.pow(2).sum() + gw.pow(2).sum(), [x, module.weight])
        results.append((out, *first, *second))
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_state_dict_is_e3nn_s():
    """Checkpoints written with e3nn's module load unchanged."""
    reference = o3.FullyConnectedTensorProduct("4x0e + 4x1o", "5x0e", "4x0e + 4x1o")
    module = ElementLinear(o3.Irreps("4x0e + 4x1o"), 5, o3.Irreps("4x0e + 4x1o"))
    module.load_state_dict(reference.state_dict())
    one_hot = torch.eye(5)[torch.tensor([0, 3, 3, 1])]
    x = torch.randn(4, 16)
    torch.testing.assert_close(module(x, one_hot), reference(x, one_hot))
