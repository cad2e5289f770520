"""The crystal denoiser of joint diffusion over atom types, fractional coordinates and lattice.

``B`` crystals, ``N`` atoms, ``K`` element classes:

==================  ==========  =======  =======================================================
input               shape       dtype    meaning
==================  ==========  =======  =======================================================
``types``           (N,)        int64    element class in ``0..K-1``, or ``K``: masked
``frac``            (N, 3)      float    fractional coordinates (any real values; read mod 1)
``lattice``         (B, 3, 3)   float    lattice vectors as rows (Å)
``batch``           (N,)        int64    crystal of each atom, non-decreasing
``t``               (B,)        float    diffusion time in [0, 1]
``conditions``      (B, C)      float    condition embedding, or None (unconditional)
==================  ==========  =======  =======================================================

==================  ==========  =========================================================
output              shape       meaning
==================  ==========  =========================================================
``type_logits``     (N, K)      logits of the clean element class (no mask class)
``frac_score``      (N, 3)      score of the fractional-coordinate (torus) process,
                                ``∂ log p / ∂f`` in the input's fractional basis
``lattice_eps``     (B, 3, 3)   noise of the DDPM on the lattice matrix, in the input basis
==================  ==========  =========================================================

**Symmetries.** For every crystal independently: rotations and reflections of the Cartesian
frame ``L -> L R^T`` leave ``type_logits`` and ``frac_score`` unchanged and send
``lattice_eps -> lattice_eps R^T``; permuting atoms permutes the outputs; translating all atoms
``f -> f + τ`` or shifting one by a lattice vector ``f -> f + n`` (``n`` integer) changes
nothing; and with ``canonicalize`` (the default) describing the same crystal in another unit cell
changes the outputs only by the change of basis (below).

**Change of unit cell.** Another cell of the same lattice is ``L' = W L`` with ``W`` integer and
``det W = ±1``; the same atoms have ``f' = f W^{-1}`` (so ``x = f L = f' L'``). The fractional
score is a gradient: with ``f = f' W``, ``∂f_j / ∂f'_i = W_ij``, so
``s'_i = Σ_j W_ij s_j``, i.e. ``s' = s W^T`` (row vectors). Equivalently the Cartesian score
``s L^{-T}`` is the same in every cell: ``s' L'^{-T} = s W^T W^{-T} L^{-T}``. The lattice noise is
pushed forward linearly: ``W L_t = sqrt(ᾱ) W L_0 + sqrt(1 - ᾱ) W ε``, so ``ε' = W ε``. Types do not
change.

**Canonicalisation.** The network (:class:`~matgen.generators.crystal.cspnet.CSPNet`) sees only
rotation-invariant quantities of the cell it is given, so alone it is not invariant to the choice
of cell. With ``canonicalize`` the denoiser Niggli-reduces the (noisy) input lattice,
``L_c = T L``, and evaluates the network in every frame ``L_k = W_k L`` with ``W_k = U_k T``,
``U_k`` running over the automorphisms of the reduced lattice
(:func:`~matgen.generators.crystal.canonical_cell.canonical_frames`; ``{I, -I}`` for a generic
lattice, so about two evaluations). In frame ``k`` the atoms are at ``f_k = f W_k^{-1}`` (wrapped
into [0, 1)); its outputs come back to the input basis by the rules above with ``W = W_k``:
``s = s_k W_k^{-T}`` and ``ε = W_k^{-1} ε_k``, then are averaged over the frames. Any other cell
``W L`` reduces to one of the same frames (up to the order of the automorphisms), so the average
transforms exactly as required. The average over ``±I`` is needed even for generic lattices:
``L_c`` and ``-L_c`` both satisfy the Niggli conditions, and two bases of one lattice can reduce
to either.
"""

from __future__ import annotations

import torch
from torch import nn

from matgen.data.lattice import wrap_frac
from matgen.generators.crystal.canonical_cell import canonical_frames
from matgen.generators.crystal.cspnet import CSPNet
from matgen.generators.crystal.denoiser_config import CrystalDenoiserConfig

__all__ = ["CrystalDenoiser"]


class CrystalDenoiser(nn.Module):
    """``forward(types, frac, lattice, batch, t, conditions=None) -> {"type_logits",
    "frac_score", "lattice_eps"}``; see the module docstring for shapes and symmetries."""

    def __init__(self, config: CrystalDenoiserConfig) -> None:
        super().__init__()
        self.config = config
        self.network = CSPNet(
            num_classes=config.num_classes,
            hidden_dim=config.hidden_dim,
            num_layers=config.num_layers,
            n_freq=config.n_freq,
            time_dim=config.time_dim,
            cond_dim=config.cond_dim,
        )

    def forward(
        self,
        types: torch.Tensor,
        frac: torch.Tensor,
        lattice: torch.Tensor,
        batch: torch.Tensor,
        t: torch.Tensor,
        conditions: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Denoiser outputs for a ragged batch of crystals.

        Args:
            types: ``(N,)`` int64 element classes, ``K`` for masked atoms.
            frac: ``(N, 3)`` fractional coordinates.
            lattice: ``(B, 3, 3)`` lattice vectors as rows (Å).
            batch: ``(N,)`` int64 crystal index of each atom, non-decreasing.
            t: ``(B,)`` diffusion times in [0, 1].
            conditions: ``(B, cond_dim)`` condition embeddings, or None.

        Returns:
            ``type_logits (N, K)``, ``frac_score (N, 3)``, ``lattice_eps (B, 3, 3)``, in the
            dtype of ``frac``.
        """
        self._check_inputs(types, frac, lattice, batch, t, conditions)
        if not self.config.canonicalize:
            logits, score, eps = self.network(types, frac, lattice, batch, t, conditions)
            return {"type_logits": logits, "frac_score": score, "lattice_eps": eps}
        return self._frame_average(types, frac, lattice, batch, t, conditions)

    def _frame_average(
        self,
        types: torch.Tensor,
        frac: torch.Tensor,
        lattice: torch.Tensor,
        batch: torch.Tensor,
        t: torch.Tensor,
        conditions: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        device, dtype = frac.device, frac.dtype
        num_systems, num_atoms = lattice.shape[0], frac.shape[0]
        frames = canonical_frames(lattice)
        system = torch.from_numpy(frames.system).to(device)
        transform = torch.from_numpy(frames.transform).to(device=device, dtype=dtype)
        inverse = torch.from_numpy(frames.inverse).to(device=device, dtype=dtype)

        # Atoms of each frame: the atoms of its crystal, in order.
        counts = torch.bincount(batch, minlength=num_systems)
        first = torch.cumsum(counts, 0) - counts
        frame_counts = counts[system]
        frame_of_atom = torch.repeat_interleave(
            torch.arange(system.numel(), device=device), frame_counts
        )
        frame_start = torch.cumsum(frame_counts, 0) - frame_counts
        atom = (
            first[system][frame_of_atom]
            + torch.arange(frame_of_atom.numel(), device=device)
            - frame_start[frame_of_atom]
        )
        atom_inverse = inverse[frame_of_atom]  # (N_frames, 3, 3), W_k^{-1} of each atom's frame

        logits_k, score_k, eps_k = self.network(
            types[atom],
            wrap_frac(torch.einsum("ni,nij->nj", frac[atom], atom_inverse)),
            transform @ lattice[system],
            frame_of_atom,
            t[system],
            None if conditions is None else conditions[system],
        )

        frames_per_system = torch.bincount(system, minlength=num_systems).to(dtype)
        atom_weight = (1.0 / frames_per_system)[batch, None]
        logits = torch.zeros(num_atoms, logits_k.shape[1], dtype=dtype, device=device)
        logits = logits.index_add_(0, atom, logits_k) * atom_weight
        # s = s_k W_k^{-T}: s_i = Σ_j (s_k)_j (W_k^{-1})_ij.
        score_back = torch.einsum("nj,nij->ni", score_k, atom_inverse)
        score = torch.zeros(num_atoms, 3, dtype=dtype, device=device)
        score = score.index_add_(0, atom, score_back) * atom_weight
        eps = torch.zeros(num_systems, 3, 3, dtype=dtype, device=device)
        eps = eps.index_add_(0, system, inverse @ eps_k) / frames_per_system[:, None, None]
        return {"type_logits": logits, "frac_score": score, "lattice_eps": eps}

    def _check_inputs(
        self,
        types: torch.Tensor,
        frac: torch.Tensor,
        lattice: torch.Tensor,
        batch: torch.Tensor,
        t: torch.Tensor,
        conditions: torch.Tensor | None,
    ) -> None:
        n, b = frac.shape[0], lattice.shape[0]
        problems = []
        if frac.shape != (n, 3):
            problems.append(f"frac has shape {tuple(frac.shape)}, expected (N, 3)")
        if lattice.shape != (b, 3, 3):
            problems.append(f"lattice has shape {tuple(lattice.shape)}, expected (B, 3, 3)")
        if types.shape != (n,) or batch.shape != (n,):
            problems.append(
                f"types {tuple(types.shape)} and batch {tuple(batch.shape)} must both be ({n},)"
            )
        if t.shape != (b,):
            problems.append(f"t has shape {tuple(t.shape)}, expected ({b},)")
        if conditions is not None:
            if self.config.cond_dim == 0:
                problems.append("conditions were given but the config has cond_dim=0")
            elif conditions.shape != (b, self.config.cond_dim):
                problems.append(
                    f"conditions have shape {tuple(conditions.shape)}, "
                    f"expected ({b}, {self.config.cond_dim})"
                )
        if problems:
            raise ValueError("CrystalDenoiser inputs: " + "; ".join(problems))
        if n and (bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0 or int(batch[-1]) >= b):
            raise ValueError(
                f"batch must be non-decreasing crystal indices in 0..{b - 1} "
                "(the atoms of a crystal contiguous, crystals in order)"
            )
        k = self.config.num_classes
        if n and (int(types.min()) < 0 or int(types.max()) > k):
            raise ValueError(
                f"types must lie in 0..{k} ({k} element classes, {k} the mask token); "
                f"got {int(types.min())}..{int(types.max())}"
            )
