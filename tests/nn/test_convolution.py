"""The path-by-path convolution equals e3nn's TensorProduct followed by a neighbour sum, values
and gradients, for the node irreps of every MACE preset."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from matgen.nn.convolution import ChannelwiseConvolution
from matgen.nn.interaction import convolution_irreps


@pytest.fixture(autouse=True)
def _build_in_float64():
    """Modules take their constants in the default dtype, as e3nn's do; MACE builds in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("node", ["6x0e", "6x0e + 6x1o", "4x0e + 4x1o + 4x2e"])
def test_equals_e3nn_tensor_product_and_sum(node):
    torch.manual_seed(0)
    node = o3.Irreps(node)
    sh = o3.Irreps.spherical_harmonics(3)
    target = (sh * node[0].mul).sort()[0].simplify()
    mid, instructions = convolution_irreps(node, sh, target)
    reference = o3.TensorProduct(
        node, sh, mid, instructions, shared_weights=False, internal_weights=False
    ).double()
    ours = ChannelwiseConvolution(node, sh, mid, instructions).double()
    assert ours.weight_numel == reference.weight_numel
    n, e = 7, 40
    x = torch.randn(n, node.dim, dtype=torch.float64, requires_grad=True)
    y = torch.randn(e, sh.dim, dtype=torch.float64, requires_grad=True)
    w = torch.randn(e, reference.weight_numel, dtype=torch.float64, requires_grad=True)
    sender, receiver = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))

    def e3nn_conv():
        m = reference(x[sender], y, w)
        return m.new_zeros(n, m.shape[1]).index_add(0, receiver, m)

    a, b = e3nn_conv(), ours(x, y, w, sender, receiver)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    grads_a = torch.autograd.grad(a.pow(2).sum(), [x, y, w])
    grads_b = torch.autograd.grad(b.pow(2).sum(), [x, y, w])
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(gb, ga, rtol=1e-11, atol=1e-11)


def test_no_edges():
    node, sh = o3.Irreps("4x0e + 4x1o"), o3.Irreps.spherical_harmonics(2)
    mid, instructions = convolution_irreps(node, sh, (sh * 4).sort()[0].simplify())
    conv = ChannelwiseConvolution(node, sh, mid, instructions)
    empty = torch.zeros(0, dtype=torch.long)
    out = conv(
        torch.randn(3, node.dim),
        torch.zeros(0, sh.dim),
        torch.zeros(0, conv.weight_numel),
        empty,
        empty,
    )
    assert out.shape == (3, mid.dim) and not out.any()


def _random_convolution(node: str, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    node = o3.Irreps(node)
    sh = o3.Irreps.spherical_harmonics(3)
    mid, instructions = convolution_irreps(node, sh, (sh * node[0].mul).sort()[0].simplify())
    conv = ChannelwiseConvolution(node, sh, mid, instructions).to(dtype).eval()
    n, e = 9, 60
    inputs = [
        torch.randn(n, node.dim, dtype=dtype, requires_grad=True),
        torch.randn(e, sh.dim, dtype=dtype, requires_grad=True),
        torch.randn(e, conv.weight_numel, dtype=dtype, requires_grad=True),
    ]
    edges = [torch.randint(0, n, (e,)), torch.randint(0, n, (e,))]
    return conv, inputs, edges


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("node", ["6x0e", "6x0e + 6x1o", "4x0e + 4x1o + 4x2e"])
def test_compiled_kernel_equals_eager_operations(node, dtype, kernel_threads, graph_names):
    """In evaluation mode on a CPU the compiled kernel runs, in training mode the eager
    operations; values and all gradients match."""
    conv, inputs, edges = _random_convolution(node, dtype)
    compiled = conv(*inputs, *edges)
    eager = conv.train()(*inputs, *edges)
    assert "_CompiledConvolutionBackward" in graph_names(compiled)  # the kernel ran
    assert "_CompiledConvolutionBackward" not in graph_names(eager)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-4}
    torch.testing.assert_close(compiled, eager, **tol)
    g = torch.randn_like(eager)
    for a, b in zip(
        torch.autograd.grad(compiled, inputs, g), torch.autograd.grad(eager, inputs, g), strict=True
    ):
        torch.testing.assert_close(a, b, **tol)


def test_compiled_kernel_gradcheck():
    conv, inputs, edges = _random_convolution("3x0e + 3x1o", torch.float64, seed=1)
    assert torch.autograd.gradcheck(lambda x, y, w: conv(x, y, w, *edges), inputs)


def test_second_derivatives_through_the_kernel(graph_names):
    """A gradient taken with ``create_graph`` (a force loss) is differentiable again through the
    kernel, and equals that of the eager operations."""
    conv, (x, y, w), edges = _random_convolution("4x0e + 4x1o", torch.float64)

    def second(module):
        out = module(x, y, w, *edges)
        (gy,) = torch.autograd.grad(out.pow(2).sum(), y, create_graph=True)
        return out, torch.autograd.grad(gy.pow(2).sum(), [x, w])

    compiled_out, compiled = second(conv)
    eager_out, eager = second(conv.train())
    assert "_CompiledConvolutionBackward" in graph_names(compiled_out)
    assert "_CompiledConvolutionBackward" not in graph_names(eager_out)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("training", [False, True])
def test_paired_edges_share_one_weight_row(training, kernel_threads):
    """``paired=True``: edges 2k and 2k + 1 read weight row k; the same as duplicated rows."""
    conv, (x, y, w), edges = _random_convolution("4x0e + 4x1o", torch.float64)
    conv.train(training)
    half = w[0::2].detach().clone().requires_grad_(True)
    out = conv(x, y, half, *edges, paired=True)
    reference = conv(x, y, half.repeat_interleave(2, dim=0), *edges)
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    for a, b in zip(
        torch.autograd.grad(out, [x, y, half], g),
        torch.autograd.grad(reference, [x, y, half], g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
