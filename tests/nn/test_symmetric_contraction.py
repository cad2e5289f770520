"""The monomial evaluation of the symmetric contraction equals the nested contraction of the
MACE paper for any U, and is equivariant."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from matgen.nn.radial import PolynomialCutoff, RadialEmbedding
from matgen.nn.symmetric_contraction import SymmetricContraction, symmetric_coupling_basis

COUPLING = o3.Irreps("0e + 1o + 2e")


def _dense(sc, x, elements):
    """A_{c,L,M} = sum_nu sum_k w[z,k,c] U[M, i.., k] x_{c,i}..: the paper's formula, literally."""
    n = x.shape[0]
    blocks = []
    for j, _ in enumerate(sc.irreps_out):
        acc = 0
        for nu in range(1, sc.correlation + 1):
            u = getattr(sc, f"U_{j}_{nu}")
            w = sc.weights[f"{j}_{nu}"][elements]
            idx = "ijl"[:nu]
            eq = f"o{idx}k,nkc," + ",".join(f"nc{a}" for a in idx) + "->nco"
            acc = acc + torch.einsum(eq, u, w, *([x] * nu))
        blocks.append(acc.reshape(n, -1))
    return torch.cat(blocks, -1)


@pytest.fixture(scope="module")
def contraction():
    torch.manual_seed(0)
    sc = SymmetricContraction(
        COUPLING, "6x0e + 6x1o + 6x2e", correlation=3, num_elements=4, num_channels=6
    )
    return sc.double()


def test_equals_the_nested_contraction(contraction):
    x = torch.randn(9, 6, COUPLING.dim, dtype=torch.float64)
    z = torch.tensor([0, 3, 3, 1, 0, 2, 2, 2, 1])
    torch.testing.assert_close(contraction(x, z), _dense(contraction, x, z), rtol=1e-12, atol=1e-12)


def test_any_u_works_including_non_symmetric_ones(contraction):
    """Foreign checkpoints may store U that is not symmetric in its input axes."""
    sc = SymmetricContraction(
        COUPLING, "6x0e + 6x1o + 6x2e", correlation=3, num_elements=4, num_channels=6
    ).double()
    state = contraction.state_dict()
    u = state["U_1_3"]
    state["U_1_3"] = u + 0.3 * torch.randn_like(u)  # arbitrary, not symmetric
    sc.load_state_dict(state)
    x = torch.randn(5, 6, COUPLING.dim, dtype=torch.float64)
    z = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(sc(x, z), _dense(sc, x, z), rtol=1e-12, atol=1e-12)


def test_equivariant_with_inversion(contraction):
    """Features built from spherical harmonics of vectors, so that a rotation acts exactly on the
    vectors (e3nn's Wigner matrices are only accurate to about 1e-6): scalars are invariant, vectors
    rotate with R, and the norms of the l=2 outputs are invariant."""
    vectors = torch.randn(7, 6, 3, 3, dtype=torch.float64)
    sh = o3.SphericalHarmonics(COUPLING, normalize=False, normalization="component")
    z = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    rot = -o3.rand_matrix(dtype=torch.float64)
    out = contraction(sh(vectors).sum(2), z)
    turned = contraction(sh(vectors @ rot.T).sum(2), z)
    d1 = rot  # e3nn 0.6 orders l=1 as (x, y, z); a 1o feature turns like a vector
    s, v, t = out[:, :6], out[:, 6:24].reshape(7, 6, 3), out[:, 24:].reshape(7, 6, 5)
    s2, v2, t2 = turned[:, :6], turned[:, 6:24].reshape(7, 6, 3), turned[:, 24:].reshape(7, 6, 5)
    torch.testing.assert_close(s2, s, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(v2, v @ d1.T, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(t2.norm(dim=-1), t.norm(dim=-1), rtol=1e-11, atol=1e-11)
    assert v.abs().max() > 1e-3 and t.abs().max() > 1e-3


def test_basis_sizes_match_the_symmetric_powers():
    """Sym^2(0e+1o+2e) holds 0e three times (0e0e, 1o1o, 2e2e); Sym^3 more."""
    assert symmetric_coupling_basis(COUPLING, o3.Irrep("0e"), 2).shape == (1, 9, 9, 3)
    assert symmetric_coupling_basis(COUPLING, o3.Irrep("1o"), 1).shape == (3, 9, 1)
    assert symmetric_coupling_basis(COUPLING, o3.Irrep("1e"), 2).shape[-1] == 0  # antisymmetric


def test_radial_features_vanish_smoothly_at_the_cutoff():
    r = torch.tensor([4.999999, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    emb = RadialEmbedding(5.0, 8).double()
    f = emb(r)
    assert f[1:].abs().max() == 0 and f[0].abs().max() < 1e-9
    (g,) = torch.autograd.grad(PolynomialCutoff(5.0)(r).sum(), r)
    assert g.abs().max() < 1e-9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("target", ["6x0e + 6x1o + 6x2e", "6x0e"])
def test_compiled_kernel_equals_eager_operations(target, dtype, kernel_threads, graph_names):
    """Evaluation mode on a CPU runs the compiled kernel, training mode the eager operations:
    values, gradients (features and element weights) and second derivatives agree."""
    torch.manual_seed(0)
    sc = SymmetricContraction(COUPLING, target, correlation=3, num_elements=4, num_channels=6).to(
        dtype
    )
    x = torch.randn(9, 6, COUPLING.dim, dtype=dtype, requires_grad=True)
    z = torch.tensor([0, 3, 3, 1, 0, 2, 2, 2, 1])
    weight = sc.weights[f"0_{sc.correlation}"]
    results = []
    for training in (False, True):
        sc.train(training)
        out = sc(x, z)
        assert ("_CompiledContractionBackward" in graph_names(out)) is not training
        g = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        first = torch.autograd.grad(out, [x, weight], g, retain_graph=True)
        gx, gw = torch.autograd.grad(out, [x, weight], g, create_graph=True)
        second = torch.autograd.grad(gx.pow(2).sum() + gw.pow(2).sum(), [x, weight])
        results.append((out, *first, *second))
    tol = {"rtol": 1e-11, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_radial_mlp_is_e3nns(dtype):
    """RadialMLP folds the activation's normalising constant into the next weight: e3nn's
    numbers up to rounding, first and second derivatives included, from the same state dict."""
    from e3nn.nn import FullyConnectedNet

    from matgen.nn.radial import RadialMLP

    torch.manual_seed(0)
    ours = RadialMLP([8, 16, 16, 40], torch.nn.functional.silu).to(dtype)
    theirs = FullyConnectedNet([8, 16, 16, 40], torch.nn.functional.silu).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    assert theirs[0].act.cst != pytest.approx(1.0, abs=1e-3)  # there is a constant to fold
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    x = torch.randn(50, 8, dtype=dtype, requires_grad=True)
    g = torch.randn(50, 40, dtype=dtype)
    results = []
    for net in (ours, theirs):
        out = net(x)
        (gx,) = torch.autograd.grad(out, x, g, create_graph=True)
        second = torch.autograd.grad(gx.pow(2).sum(), [x, *net.parameters()])
        results.append((out, gx, *second))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **tol)
