"""CSPNet: the periodic message-passing network of DiffCSP (Jiao et al., NeurIPS 2023), in one
given unit cell.

``N`` atoms of ``B`` crystals; ``H`` channels. Every atom exchanges messages with every atom of
its own crystal, itself included: the pair ``i = i`` stands for an atom and its own periodic
images (``Δf = 0 mod 1``), and gives a one-atom cell a message carrying its lattice. Layer ``l``:

    x_i    = LayerNorm(h_i)
    m_ij   = φ_m([x_i, x_j, λ(L), ψ(f_j - f_i)])                    (edge MLP, 2 x SiLU)
    h_i   <- h_i + φ_h([x_i, (1 / n_b) Σ_j m_ij])                   (node MLP, 2 x SiLU)

with ``λ(L)`` the six lattice invariants (log-lengths, cosines of angles) and ``ψ`` the periodic
Fourier features (:mod:`matgen.generators.crystal.features`). Before each layer a condition
``c_b`` may be added through a zero-initialised linear adapter, ``h_i <- h_i + A_l c_b``
(MatterGen's adapters, Zeni et al., Nature 2025): a model whose adapters were just added computes
what it did before. The first linear map of ``φ_m`` is split by blocks of its input, so the node
blocks run once per atom and the lattice block once per crystal.

Heads, on ``x = LayerNorm(h)``: element logits ``(N, K)``; the fractional score ``(N, 3)``; and
the lattice noise ``ε = Φ L / ℓ``, ``Φ (B, 3, 3)`` from an MLP of the crystal's mean node feature
and ``ℓ = sqrt(tr(L L^T) / 3)`` the RMS lattice-vector length, so ``ε -> ε R^T`` when
``L -> L R^T``. All inputs are invariant to rotations of the Cartesian frame (inversion
included), to permutations, translations and lattice-vector shifts of atoms; the network is not
invariant to the choice of unit cell, which :class:`~matgen.generators.crystal.denoiser.
CrystalDenoiser` adds.
"""

from __future__ import annotations

import torch
from torch import nn

from matgen.generators.crystal.features import (
    SinusoidalTimeEmbedding,
    fractional_fourier_features,
    lattice_invariants,
)

__all__ = ["CSPLayer", "CSPNet", "fully_connected_pairs"]

#: Number of lattice invariants per crystal (:func:`lattice_invariants`).
N_LATTICE_FEATURES = 6


def fully_connected_pairs(batch: torch.Tensor, num_systems: int) -> torch.Tensor:
    """All ordered pairs ``(i, j)`` of atoms of the same system, ``i = j`` included.

    Args:
        batch: ``(N,)`` int64 system index of each atom, non-decreasing.
        num_systems: ``B``.

    Returns:
        ``(2, Σ_b n_b²)`` int64: center ``i`` (row 0, ascending) and partner ``j`` (row 1).
    """
    counts = torch.bincount(batch, minlength=num_systems)
    first = torch.cumsum(counts, 0) - counts  # index of each system's first atom
    degree = counts[batch]  # (N,)
    center = torch.repeat_interleave(torch.arange(batch.numel(), device=batch.device), degree)
    start = torch.cumsum(degree, 0) - degree
    local = torch.arange(center.numel(), device=batch.device) - torch.repeat_interleave(
        start, degree
    )
    partner = first[batch][center] + local
    return torch.stack([center, partner])


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class CSPLayer(nn.Module):
    """One fully connected periodic message-passing layer; see the module docstring."""

    def __init__(self, hidden_dim: int, n_fourier: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.edge_center = nn.Linear(hidden_dim, hidden_dim)
        self.edge_partner = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.edge_lattice = nn.Linear(N_LATTICE_FEATURES, hidden_dim, bias=False)
        self.edge_fourier = nn.Linear(n_fourier, hidden_dim, bias=False)
        self.edge_out = nn.Linear(hidden_dim, hidden_dim)
        self.node_mlp = nn.Sequential(
            nn.Linear(2 * hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.SiLU(),
        )
        self.act = nn.SiLU()

    def forward(
        self,
        h: torch.Tensor,
        pairs: torch.Tensor,
        fourier: torch.Tensor,
        lattice_features: torch.Tensor,
        batch: torch.Tensor,
        inv_degree: torch.Tensor,
    ) -> torch.Tensor:
        """``h (N, H) -> (N, H)``; ``pairs (2, E)``, ``fourier (E, 6 n_freq)``,
        ``lattice_features (B, 6)``, ``batch (N,)``, ``inv_degree (N, 1)`` is ``1 / n_b`` of
        each atom's system."""
        x = self.norm(h)
        center, partner = pairs
        # Per-atom blocks of the first edge layer; the lattice block rides with the center.
        own = self.edge_center(x) + self.edge_lattice(lattice_features)[batch]
        pre = torch.addmm(
            own[center] + self.edge_partner(x)[partner], fourier, self.edge_fourier.weight.t()
        )
        message = self.act(self.edge_out(self.act(pre)))
        aggregate = torch.zeros_like(h).index_add_(0, center, message) * inv_degree
        return h + self.node_mlp(torch.cat([x, aggregate], dim=-1))


class CSPNet(nn.Module):
    """CSPNet in the unit cell it is given.

    Args:
        num_classes: ``K`` element classes; type index ``K`` is the mask token.
        hidden_dim, num_layers, n_freq, time_dim, cond_dim: see
            :class:`~matgen.generators.crystal.denoiser_config.CrystalDenoiserConfig`.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        hidden_dim: int,
        num_layers: int,
        n_freq: int,
        time_dim: int,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        self.n_freq = n_freq
        self.cond_dim = cond_dim
        self.type_embedding = nn.Embedding(num_classes + 1, hidden_dim)
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        self.node_in = nn.Linear(hidden_dim + time_dim, hidden_dim)
        self.layers = nn.ModuleList(CSPLayer(hidden_dim, 6 * n_freq) for _ in range(num_layers))
        self.adapters = nn.ModuleList(
            nn.Linear(cond_dim, hidden_dim) for _ in range(num_layers if cond_dim > 0 else 0)
        )
        for adapter in self.adapters:
            nn.init.zeros_(adapter.weight)
            nn.init.zeros_(adapter.bias)
        self.norm = nn.LayerNorm(hidden_dim)
        self.type_head = _mlp(hidden_dim, hidden_dim, num_classes)
        self.frac_head = nn.Linear(hidden_dim, 3)
        self.lattice_head = _mlp(hidden_dim, hidden_dim, 9)

    def forward(
        self,
        types: torch.Tensor,
        frac: torch.Tensor,
        lattice: torch.Tensor,
        batch: torch.Tensor,
        t: torch.Tensor,
        conditions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(type_logits (N, K), frac_score (N, 3), lattice_eps (B, 3, 3))`` in this cell.

        Args:
            types: ``(N,)`` int64 in ``0..K``; frac: ``(N, 3)``; lattice: ``(B, 3, 3)`` rows (Å);
            batch: ``(N,)`` non-decreasing system index; t: ``(B,)``; conditions: ``(B, C)`` or
            None (adapters skipped).
        """
        if conditions is not None and not self.adapters:
            raise ValueError(
                "conditions were given to a network built without adapters (cond_dim=0)"
            )
        num_systems = lattice.shape[0]
        counts = torch.bincount(batch, minlength=num_systems)
        inv_count = 1.0 / counts.clamp_min(1).to(frac.dtype)
        pairs = fully_connected_pairs(batch, num_systems)
        fourier = fractional_fourier_features(frac[pairs[1]] - frac[pairs[0]], self.n_freq)
        lattice_features = lattice_invariants(lattice)
        inv_degree = inv_count[batch, None]

        h = self.node_in(
            torch.cat(
                [self.type_embedding(types), self.time_embedding(t.to(frac.dtype))[batch]], dim=-1
            )
        )
        shifts = (
            [adapter(conditions.to(frac.dtype)) for adapter in self.adapters]
            if conditions is not None
            else [None] * len(self.layers)
        )
        for layer, shift in zip(self.layers, shifts, strict=True):
            if shift is not None:
                h = h + shift[batch]
            h = layer(h, pairs, fourier, lattice_features, batch, inv_degree)

        x = self.norm(h)
        pooled = torch.zeros(num_systems, x.shape[1], dtype=x.dtype, device=x.device)
        pooled = pooled.index_add_(0, batch, x) * inv_count[:, None]
        phi = self.lattice_head(pooled).view(num_systems, 3, 3)
        scale = torch.sqrt((lattice * lattice).sum(dim=(-1, -2)) / 3.0).clamp_min(1e-6)
        lattice_eps = phi @ lattice / scale[:, None, None]
        return self.type_head(x), self.frac_head(x), lattice_eps
