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
