"""MACE's symmetric contraction: equivariant polynomials of one node's features, element-dependent.

A node of element ``z`` carries, per channel ``c``, a vector ``x_c`` in the space of the coupling
irreps ``V = ⊕_l l`` (for ``max_ell = 3``: ``0e + 1o + 2e + 3o``, ``D = dim V = 16``). For every
target irrep ``L`` and body order ``ν = 1..correlation``, a fixed tensor ``U_{L,ν}`` of shape
``(2L+1, D, ..., D, K)`` (``ν`` input axes) spans the equivariant maps ``Sym^ν V -> L``; the output is

    A_{c, L, M} = sum_ν sum_k w_{L,ν}[z, k, c] * sum_{i_1..i_ν} U_{L,ν}[M, i_1, .., i_ν, k] x_{c,i_1} .. x_{c,i_ν}

(Batatia et al., MACE, NeurIPS 2022, eq. 10). Weights ``w`` are per element, per channel.

Evaluation. Only the part of ``U`` symmetric in its input axes contributes, so each ``U`` is
folded once into coefficients of the distinct monomials ``x_{i_1} .. x_{i_ν}`` with
``i_1 <= .. <= i_ν`` (about ``D^ν / ν!`` of them, most of which vanish by parity and selection
rules and are dropped). All ``U`` of a block together become one sparse matrix (about 1% of
its entries are non-zero). A forward pass forms the monomials of every node and channel,
multiplies them by that sparse matrix once, and weights the result by each node's element
weights. This gives the same numbers as the nested contraction of the paper for any ``U``,
including ``U`` taken from another implementation's checkpoint, at a fraction of its cost.

On CPUs in evaluation mode the same arithmetic runs node by node in a compiled kernel
(:mod:`matgen.nn._contraction_kernel`), which writes no ``(Q, N C)`` intermediate; training uses
the eager operations, and so does a second derivative taken through the kernel.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
from e3nn import o3
from torch import nn

from matgen.data.threads import parallel_ranges, run_ranges

__all__ = ["SymmetricContraction", "symmetric_coupling_basis"]

#: Fewest nodes per thread of the compiled kernels.
_NODE_GRAIN = 64

_FORMULAS = {2: "ij=ji", 3: "ijk=jik=ikj", 4: "ijkl=jikl=ikjl=ijlk"}


@functools.lru_cache(maxsize=32)
def _reduced_products(irreps_in: str, nu: int) -> tuple[str, torch.Tensor]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the basis must be exact to float64 precision
    try:
        rtp = o3.ReducedTensorProducts(_FORMULAS[nu], i=o3.Irreps(irreps_in))
    finally:
        torch.set_default_dtype(previous)
    return str(rtp.irreps_out), rtp.change_of_basis.to(torch.float64)


def symmetric_coupling_basis(irreps_in: o3.Irreps, ir_out: o3.Irrep, nu: int) -> torch.Tensor:
    """A basis ``U`` ``(2L+1, D, .., D, K)`` (float64) of the equivariant maps from the
    ``nu``-th symmetric power of ``irreps_in`` to ``ir_out``; ``K`` may be zero."""
    irreps_in = o3.Irreps(irreps_in)
    dim = irreps_in.dim
    if nu == 1:
        blocks = []
        for sl, (mul, ir) in zip(irreps_in.slices(), irreps_in, strict=True):
            for u in range(mul):
                if ir == ir_out:
                    u_mat = torch.zeros(ir.dim, dim, dtype=torch.float64)
                    start = sl.start + u * ir.dim
                    u_mat[:, start : start + ir.dim] = torch.eye(ir.dim, dtype=torch.float64)
                    blocks.append(u_mat)
    else:
        if nu not in _FORMULAS:
            raise ValueError(f"correlation order {nu} is not supported (1 to {max(_FORMULAS)})")
        irreps_out, basis = _reduced_products(str(irreps_in.simplify()), nu)
        blocks = []
        for sl, (mul, ir) in zip(
            o3.Irreps(irreps_out).slices(), o3.Irreps(irreps_out), strict=True
        ):
            if ir == ir_out:
                blocks += [
                    basis[sl.start + u * ir.dim : sl.start + (u + 1) * ir.dim] for u in range(mul)
                ]
    shape = (ir_out.dim,) + (dim,) * nu
    if not blocks:
        return torch.zeros(*shape, 0, dtype=torch.float64)
    return torch.stack(blocks, dim=-1)


def _monomials(u: torch.Tensor, tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``U`` ``(O, D^nu.., K)`` into ``(index (Q, nu), coefficient (Q, O, K))`` over the
    distinct monomials with a non-zero coefficient."""
    nu = u.dim() - 2
    dim = u.shape[1]
    u = u.to(torch.float64)
    perms = list(itertools.permutations(range(1, nu + 1)))
    sym = sum(u.permute(0, *p, nu + 1) for p in perms) / len(perms)
    combos = torch.tensor(
        list(itertools.combinations_with_replacement(range(dim), nu)), dtype=torch.long
    ).reshape(-1, nu)
    # Number of distinct orderings of each sorted index tuple (multinomial coefficient).
    counts = torch.tensor(
        [
            math.factorial(nu) // math.prod(math.factorial(c) for c in _run_lengths(t))
            for t in combos.tolist()
        ],
        dtype=torch.float64,
    )
    flat = sym.permute(*range(1, nu + 1), 0, nu + 1).reshape(dim**nu, u.shape[0], u.shape[-1])
    linear = sum(combos[:, a] * dim ** (nu - 1 - a) for a in range(nu))
    coeff = flat[linear] * counts[:, None, None]
    scale = coeff.abs().max() if coeff.numel() else torch.tensor(0.0)
    keep = coeff.flatten(1).abs().amax(dim=1) > tol * max(float(scale), 1e-300)
    return combos[keep], coeff[keep]


def _run_lengths(t: list[int]) -> list[int]:
    return [len(list(g)) for _, g in itertools.groupby(t)]


class SymmetricContraction(nn.Module):
    """``(x (N, C, D), element (N,)) -> (N, C * dim(irreps_out))`` in e3nn layout.

    Args:
        irreps_in: coupling irreps ``V`` of one channel (multiplicity one each, e.g. the
            spherical-harmonics irreps ``0e + 1o + 2e + 3o``).
        irreps_out: target irreps with the channel count as multiplicity, e.g.
            ``128x0e + 128x1o``; every multiplicity must equal ``num_channels``.
        correlation: highest body order ``ν`` (a node feature to the power ``ν``).
        num_elements: number of species (rows of the weights).
        num_channels: ``C``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_out: o3.Irreps | str,
        *,
        correlation: int,
        num_elements: int,
        num_channels: int,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.correlation = int(correlation)
        self.num_channels = int(num_channels)
        self.num_elements = int(num_elements)
        if any(mul != num_channels for mul, _ in self.irreps_out):
            raise ValueError(
                f"every target multiplicity must be {num_channels}, got {self.irreps_out}"
            )
        self.weights = nn.ParameterDict()
        for j, (_, ir) in enumerate(self.irreps_out):
            for nu in range(1, self.correlation + 1):
                u = symmetric_coupling_basis(self.irreps_in, ir, nu)
                self.register_buffer(f"U_{j}_{nu}", u)  # float64; the model casts it
                k = u.shape[-1]
                self.weights[f"{j}_{nu}"] = nn.Parameter(
                    torch.randn(num_elements, k, num_channels) / max(k, 1)
                )
        self._fold()
        self.register_load_state_dict_post_hook(lambda module, _: module._fold())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Adopt the basis sizes of the incoming ``U`` and weights (a checkpoint may carry a
        different, e.g. redundant, basis than the one built here); ``_fold`` follows."""
        for key, buf in list(self._buffers.items()):
            incoming = state_dict.get(prefix + key)
            if key.startswith("U_") and incoming is not None and incoming.shape != buf.shape:
                self._buffers[key] = torch.empty(incoming.shape, dtype=buf.dtype, device=buf.device)
        for name, param in list(self.weights.items()):
            incoming = state_dict.get(f"{prefix}weights.{name}")
            if incoming is not None and incoming.shape != param.shape:
                self.weights[name] = nn.Parameter(
                    torch.empty(incoming.shape, dtype=param.dtype, device=param.device)
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _fold(self) -> None:
        """Recompute the monomial tables from the ``U`` buffers (after init or a load).

        Builds one sparse matrix ``M`` ``(O K, Q)`` over all output components ``O`` (of every
        target irrep), all weights ``K`` (of every target irrep and body order, in the order of
        ``_weight_keys``) and all distinct monomials ``Q`` (of every degree)."""
        u0 = self.U_0_1
        #: component rows of each output irrep (split sizes of the ``(N, O, C)`` layout)
        self._out_dims = [ir.dim for _, ir in self.irreps_out]
        self._out_offsets = [0, *itertools.accumulate(self._out_dims)]
        blocks = []  # (j, nu, monomial index (q, nu), coefficients (q, o, k))
        for j, _ in enumerate(self.irreps_out):
            for nu in range(1, self.correlation + 1):
                idx, coeff = _monomials(getattr(self, f"U_{j}_{nu}"))
                blocks.append((j, nu, idx, coeff))
        # Distinct monomials, degree by degree; a degree-nu monomial is a degree-(nu-1) one
        # times one coordinate, so each needs a single product.
        index: list[tuple[int, ...]] = []
        for nu in range(1, self.correlation + 1):
            rows = {tuple(t) for _, n, idx, _ in blocks if n == nu for t in idx.tolist()}
            index += sorted(rows)
        # Close under prefixes so that every monomial's lower-degree factor is present.
        known = set(index)
        for t in list(index):
            for a in range(1, len(t)):
                if t[:a] not in known:
                    known.add(t[:a])
                    index.append(t[:a])
        index.sort(key=lambda t: (len(t), t))
        position = {t: q for q, t in enumerate(index)}
        self._degree_slices = []
        factor, coord = [], []
        for nu in range(1, self.correlation + 1):
            rows = [t for t in index if len(t) == nu]
            first = position[rows[0]] if rows else len(index)
            self._degree_slices.append((first, first + len(rows)))
            factor.append([position[t[:-1]] if nu > 1 else 0 for t in rows])
            coord.append([t[-1] for t in rows])
        for nu, (f, c) in enumerate(zip(factor, coord, strict=True), start=1):
            self.register_buffer(
                f"monomial_factor_{nu}", torch.tensor(f, dtype=torch.long), persistent=False
            )
            self.register_buffer(
                f"monomial_coord_{nu}", torch.tensor(c, dtype=torch.long), persistent=False
            )
        k_total = sum(coeff.shape[-1] for *_, coeff in blocks)
        m = torch.zeros(len(index), self._out_offsets[-1], k_total, dtype=torch.float64)
        k0 = 0
        for j, _, idx, coeff in blocks:
            k1 = k0 + coeff.shape[-1]
            rows = torch.tensor([position[tuple(t)] for t in idx.tolist()], dtype=torch.long)
            lo, hi = self._out_offsets[j], self._out_offsets[j + 1]
            m[rows, lo:hi, k0:k1] = coeff
            k0 = k1
        # (O K, Q), sparse: about 1% of the entries are non-zero.
        m_t = m.permute(1, 2, 0).reshape(-1, len(index))
        self.register_buffer(
            "monomial_coefficients_t",
            m_t.to(dtype=u0.dtype, device=u0.device).to_sparse(),
            persistent=False,
        )
        self._weight_keys = [f"{j}_{nu}" for j, nu, *_ in blocks]
        # Tables of the compiled kernel: each monomial's last coordinate and lower factor, and
        # the non-zero coefficients row by row (row o * K + k).
        rows, cols = torch.nonzero(m_t, as_tuple=True)  # row-major order
        present, counts = torch.unique_consecutive(rows, return_counts=True)
        index_tables = [
            [t[-1] for t in index],
            [position[t[:-1]] if len(t) > 1 else -1 for t in index],
            (present // k_total).tolist(),
            (present % k_total).tolist(),
            [0, *itertools.accumulate(counts.tolist())],
            cols.tolist(),
        ]
        index_tables = tuple(np.asarray(t, dtype=np.int64) for t in index_tables)
        self._tables = {
            np.dtype(dt): (*index_tables, m_t[rows, cols].numpy().astype(dt))
            for dt in (np.float64, np.float32)
        }

    def monomials(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, D) -> (Q, N * C)``: every distinct monomial of degree 1..correlation in use,
        monomial-major so that each is one contiguous row."""
        n, c, d = x.shape
        rows = x.permute(2, 0, 1).reshape(d, n * c)
        parts: list[torch.Tensor] = []
        for nu in range(1, self.correlation + 1):
            coord = rows.index_select(0, getattr(self, f"monomial_coord_{nu}"))
            if nu == 1:
                parts.append(coord)
                continue
            lower = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
            parts.append(lower.index_select(0, getattr(self, f"monomial_factor_{nu}")) * coord)
        return torch.cat(parts, dim=0)

    def forward(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        """Args: ``x`` ``(N, C, D)``; ``elements`` ``(N,)`` species indices in ``[0, num_elements)``.

        Returns: ``(N, C * dim(irreps_out))``, channels outer and ``M`` inner per target irrep.

        ``Z = M^T m`` contracts the (very sparse) coefficient matrix with the monomials ``m``
        once for all elements, ``(O K, N C)``; each node then takes its element's weights:
        ``A[n, c, o] = sum_k Z[o, k, n, c] w[z_n, k, c]``."""
        if (
            x.device.type == "cpu"
            and not self.training
            and x.dtype in (torch.float32, torch.float64)
        ):
            return self._forward_compiled(x, elements)
        n, c, _ = x.shape
        mono = self.monomials(x)  # (Q, N C)
        o, k = self._out_offsets[-1], self.monomial_coefficients_t.shape[0] // self._out_offsets[-1]
        z = torch.sparse.mm(self.monomial_coefficients_t, mono).view(o, k, n, c)
        w = self._element_weights()  # (Z, K, C)
        out = (z * w[elements].transpose(0, 1)).sum(dim=1)  # (O, N, C)
        return self._to_e3nn(out.transpose(0, 1))

    def _element_weights(self) -> torch.Tensor:
        """``(Z, K, C)``: every element's weights, in the order of the coefficient rows."""
        return torch.cat([self.weights[key] for key in self._weight_keys], dim=1)

    def _to_e3nn(self, out: torch.Tensor) -> torch.Tensor:
        """``(N, O, C)`` -> ``(N, C * dim(irreps_out))``, channels outer within each irrep."""
        n = out.shape[0]
        parts = torch.split(out, self._out_dims, dim=1)  # not slices: see irreps_to_channels
        return torch.cat([part.transpose(1, 2).reshape(n, -1) for part in parts], dim=-1)

    def _forward_compiled(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        w = self._element_weights().to(x.dtype)
        return self._to_e3nn(_CompiledContraction.apply(x.transpose(1, 2), w, elements, self))

    def _backward_eager(
        self, xt: torch.Tensor, w: torch.Tensor, elements: torch.Tensor, g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The compiled backward pass by differentiable operations: ``g`` ``(N, O, C)`` ->
        gradients of ``xt`` ``(N, D, C)`` and ``w`` ``(Z, K, C)``."""
        n, d, c = xt.shape
        o = self._out_offsets[-1]
        k = self.monomial_coefficients_t.shape[0] // o
        mono = self.monomials(xt.transpose(1, 2))  # (Q, N C)
        coefficients = self.monomial_coefficients_t.to(xt.dtype)
        g_onc = g.permute(1, 0, 2)  # (O, N, C)
        gz = g_onc[:, None] * w[elements].permute(1, 0, 2)[None]  # (O, K, N, C)
        gm = torch.sparse.mm(coefficients.t(), gz.reshape(o * k, n * c))  # (Q, N C)
        z = torch.sparse.mm(coefficients, mono).view(o, k, n, c)
        gw = torch.zeros_like(w).index_add(0, elements, (z * g_onc[:, None]).sum(0).transpose(0, 1))
        rows = xt.permute(1, 0, 2).reshape(d, n * c)
        gx = torch.zeros_like(rows)
        for nu in range(self.correlation, 0, -1):
            lo, hi = self._degree_slices[nu - 1]
            g_nu = gm[lo:hi]
            coord = getattr(self, f"monomial_coord_{nu}")
            if nu == 1:
                gx = gx.index_add(0, coord, g_nu)
                continue
            factor = getattr(self, f"monomial_factor_{nu}")
            gm = gm.index_add(0, factor, g_nu * rows[coord])
            gx = gx.index_add(0, coord, g_nu * mono[factor])
        return gx.view(d, n, c).transpose(0, 1), gw


class _CompiledContraction(torch.autograd.Function):
    """``(x (N, D, C), w (Z, K, C), elements (N,)) -> (N, O, C)`` by the numba kernels; a
    backward pass that must be differentiable runs the same arithmetic as eager operations."""

    @staticmethod
    def forward(ctx, xt, w, elements, module):
        from matgen.nn._contraction_kernel import contraction_forward

        xa, za, wa = (t.detach().contiguous().numpy() for t in (xt, elements, w))
        out = np.zeros((len(xa), module._out_offsets[-1], xa.shape[2]), dtype=xa.dtype)
        tables = module._tables[out.dtype]
        run_ranges(
            lambda _, lo, hi: contraction_forward(xa[lo:hi], za[lo:hi], wa, *tables, out[lo:hi]),
            parallel_ranges(len(xa), grain=_NODE_GRAIN),
        )
        ctx.save_for_backward(xt, w, elements)
        ctx.module = module
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        from matgen.nn._contraction_kernel import contraction_backward

        xt, w, elements = ctx.saved_tensors
        if torch.is_grad_enabled():
            return *ctx.module._backward_eager(xt, w, elements, grad), None, None
        xa, za, wa = (t.detach().contiguous().numpy() for t in (xt, elements, w))
        ga = grad.contiguous().numpy()
        tables = ctx.module._tables[xa.dtype]
        weight_grad = bool(ctx.needs_input_grad[1])
        ranges = parallel_ranges(len(xa), grain=_NODE_GRAIN)
        gx = np.zeros(xa.shape, xa.dtype)
        # without a weight gradient the kernel gets a one-number buffer it never touches
        gws = [np.zeros(wa.shape if weight_grad else (1,) * wa.ndim, wa.dtype) for _ in ranges]

        def run(k: int, lo: int, hi: int) -> None:  # nodes lo .. hi - 1; own weight buffer
            gw = gws[k]
            nodes = (xa[lo:hi], za[lo:hi], wa)
            contraction_backward(*nodes, *tables, ga[lo:hi], gx[lo:hi], gw, weight_grad)

        run_ranges(run, ranges)
        gw = torch.from_numpy(sum(gws[1:], gws[0])) if weight_grad else None
        return torch.from_numpy(gx), gw, None, None
