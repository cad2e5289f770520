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
rules and are dropped). A forward pass then forms the monomials of every node and channel, builds
the coefficient matrix of each element present in the batch from its weights, and applies it
to that element's nodes with one batched matrix product. This gives the same numbers as the
nested contraction of the paper for any ``U``, including ``U`` taken from another
implementation's checkpoint, at a fraction of its cost.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from e3nn import o3
from torch import nn

__all__ = ["SymmetricContraction", "symmetric_coupling_basis"]

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

    def _fold(self) -> None:
        """Recompute the monomial tables from the ``U`` buffers (after init or a load)."""
        dims = [ir.dim for _, ir in self.irreps_out]
        offsets = [0, *itertools.accumulate(dims)]
        self._out_dim = offsets[-1]
        dtype = self.U_0_1.dtype if hasattr(self, "U_0_1") else torch.get_default_dtype()
        device = self.U_0_1.device if hasattr(self, "U_0_1") else None
        self._terms: list[tuple[int, int, int]] = []  # (j, nu, monomial offset) per block
        index_by_nu: dict[int, list[torch.Tensor]] = {}
        n_by_nu: dict[int, int] = {}
        for j, _ in enumerate(self.irreps_out):
            for nu in range(1, self.correlation + 1):
                idx, coeff = _monomials(getattr(self, f"U_{j}_{nu}"))
                index_by_nu.setdefault(nu, []).append(idx)
                start = n_by_nu.get(nu, 0)
                n_by_nu[nu] = start + idx.shape[0]
                self.register_buffer(
                    f"M_{j}_{nu}", coeff.to(dtype=dtype, device=device), persistent=False
                )
                self._terms.append((j, nu, start))
        # Unique monomials per degree; each block maps into them.
        self._degree_offsets: dict[int, int] = {}
        total = 0
        for nu in range(1, self.correlation + 1):
            allidx = (
                torch.cat(index_by_nu[nu])
                if index_by_nu.get(nu)
                else torch.zeros(0, nu, dtype=torch.long)
            )
            uniq, inverse = (
                torch.unique(allidx, dim=0, return_inverse=True)
                if allidx.numel()
                else (allidx, torch.zeros(0, dtype=torch.long))
            )
            self.register_buffer(f"monomial_index_{nu}", uniq.to(device=device), persistent=False)
            self._degree_offsets[nu] = total
            total += uniq.shape[0]
            # Row of each block's monomials inside the global monomial vector.
            pos = 0
            for j, _ in enumerate(self.irreps_out):
                q = getattr(self, f"M_{j}_{nu}").shape[0]
                self.register_buffer(
                    f"rows_{j}_{nu}",
                    (inverse[pos : pos + q] + self._degree_offsets[nu]).to(device=device),
                    persistent=False,
                )
                pos += q
        self._num_monomials = total
        self._out_offsets = offsets

    def monomials(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, D) -> (N, C, Q)``: every distinct monomial of degree 1..correlation in use."""
        parts = []
        for nu in range(1, self.correlation + 1):
            idx = getattr(self, f"monomial_index_{nu}")
            if idx.shape[0] == 0:
                continue
            term = x[..., idx[:, 0]]
            for a in range(1, nu):
                term = term * x[..., idx[:, a]]
            parts.append(term)
        return torch.cat(parts, dim=-1)

    def coefficients(self, elements: torch.Tensor) -> torch.Tensor:
        """``(P,) -> (P, C, Q, O)`` coefficient matrices of the given element indices."""
        n_p = elements.shape[0]
        ref = self.U_0_1
        out = ref.new_zeros(n_p, self.num_channels, self._num_monomials, self._out_dim)
        for j, nu, _ in self._terms:
            w = self.weights[f"{j}_{nu}"][elements]  # (P, K, C)
            if w.shape[1] == 0:
                continue
            m = getattr(self, f"M_{j}_{nu}")  # (q, o, K)
            block = torch.einsum("qok,pkc->pcqo", m, w)
            rows = getattr(self, f"rows_{j}_{nu}")
            lo, hi = self._out_offsets[j], self._out_offsets[j + 1]
            out[:, :, rows, lo:hi] = out[:, :, rows, lo:hi] + block
        return out

    def forward(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        """Args: ``x`` ``(N, C, D)``; ``elements`` ``(N,)`` species indices in ``[0, num_elements)``.

        Returns: ``(N, C * dim(irreps_out))``, channels outer and ``M`` inner per target irrep."""
        n = x.shape[0]
        mono = self.monomials(x)  # (N, C, Q)
        present, inverse = torch.unique(elements, return_inverse=True)
        coeff = self.coefficients(present)  # (P, C, Q, O)
        order = torch.argsort(inverse)
        counts = torch.bincount(inverse, minlength=present.shape[0]).tolist()
        results = []
        for p, nodes in enumerate(torch.split(order, counts)):
            sel = mono.index_select(0, nodes).transpose(0, 1)  # (C, n_p, Q)
            results.append(torch.bmm(sel, coeff[p]).transpose(0, 1))  # (n_p, C, O)
        out = torch.cat(results).index_select(0, torch.argsort(order))
        blocks = [
            out[:, :, self._out_offsets[j] : self._out_offsets[j + 1]].reshape(n, -1)
            for j in range(len(self.irreps_out))
        ]
        return torch.cat(blocks, dim=-1)
