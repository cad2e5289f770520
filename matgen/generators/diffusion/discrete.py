"""D3PM with an absorbing [MASK] state for categorical variables (e.g. atom types).

States are ``0 .. K-1`` (the classes) and ``K`` (the mask). Step ``t`` keeps an unmasked token with
probability ``α_t = ᾱ_t / ᾱ_{t-1}`` and masks it otherwise; the mask is absorbing. With
``ᾱ_0 = 1`` and ``ᾱ`` non-increasing (default ``ᾱ_t = 1 - t/T``, Austin et al. 2021, which masks
the same expected number of tokens per step and everything at ``T``):

* forward: ``q(x_t | x_0) = ᾱ_t [x_t = x_0] + (1 - ᾱ_t) [x_t = K]``;
* posterior of a jump ``t → s < t`` (``s = t - 1``: one step): an unmasked ``x_t`` stays
  (``x_t = x_0`` necessarily); a masked one becomes ``x_0`` with probability
  ``w_{t→s} = (ᾱ_s - ᾱ_t) / (1 - ᾱ_t)`` and stays masked otherwise;
* reverse, ``x_0``-parameterised: ``p(x_s | x_t) = Σ_{x_0} q(x_s | x_t, x_0) p̃(x_0 | x_t)``
  (the normalised ``Σ_{x_0} q(x_t | x_s) q(x_s | x_0) p̃(x_0 | x_t)`` of D3PM): for a masked
  ``x_t``, ``p(x_s = i) = w_{t→s} p̃_i`` and ``p(x_s = K) = 1 - w_{t→s}``;
* losses: the variational-bound term ``L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t))``
  (``-log p(x_0 | x_1)`` at ``t = 1``), which here is ``[x_t = K] w_{t→t-1} (-log p̃_{x_0})``, and
  D3PM's auxiliary cross-entropy ``-log p̃_{x_0}`` on every token; the hybrid loss is
  ``L_vb + λ L_ce``.

``p̃(x_0 | x_t) = softmax(logits)`` over the ``K`` classes (the network gives no mask logit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matgen.generators.diffusion.schedules import at_steps, linear_alpha_bars, step_table

__all__ = ["AbsorbingD3PM"]

_REDUCTIONS = ("mean", "sum", "none")


class AbsorbingD3PM(nn.Module):
    """Absorbing-state discrete diffusion over ``K`` classes plus a mask state ``K``.

    Holds ``ᾱ`` as a non-persistent float64 buffer. Steps ``t`` (and jump targets ``s``) are
    int64 per row ``(N,)``, per item with a graph ``index`` (``(B,)`` and ``(N,)``), or ints.

    Args:
        num_classes: ``K``.
        timesteps: ``T``.
        alpha_bars: ``(T,)`` keep probabilities ``ᾱ_1 .. ᾱ_T``, non-increasing in [0, 1) (the
            mask is absorbed when ``ᾱ_T = 0``), or None for ``ᾱ_t = 1 - t/T``.
    """

    def __init__(
        self, num_classes: int, timesteps: int = 1000, *, alpha_bars: Tensor | None = None
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, not {num_classes}")
        if alpha_bars is None:
            alpha_bars = linear_alpha_bars(timesteps)
        alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
        if alpha_bars.shape != (timesteps,):
            raise ValueError(f"alpha_bars must have shape ({timesteps},), got {alpha_bars.shape}")
        table = step_table(alpha_bars, 1.0)
        if not bool((alpha_bars >= 0).all() and (table[1:] <= table[:-1]).all()):
            raise ValueError("alpha_bars must be non-increasing and non-negative")
        if not bool(alpha_bars[0] < 1.0):
            raise ValueError("alpha_bars[0] (step 1) must be below 1: step 1 must mask something")
        self.num_classes = num_classes
        self.timesteps = timesteps
        self.register_buffer("_alpha_bars", table, persistent=False)

    @property
    def mask_index(self) -> int:
        """The mask state, ``K``."""
        return self.num_classes

    @property
    def alpha_bars(self) -> Tensor:
        """``(T,)`` ``ᾱ_1 .. ᾱ_T``."""
        return self._alpha_bars[1:]

    def _check_logits(self, logits: Tensor) -> None:
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"logits must have {self.num_classes} classes in the last dimension (no mask "
                f"logit), got shape {tuple(logits.shape)}"
            )

    def _mask_vector(self, like: Tensor) -> Tensor:
        """``(K + 1,)`` one-hot of the mask state, ``like``'s dtype and device."""
        out = torch.zeros(self.num_classes + 1, dtype=like.dtype, device=like.device)
        out[self.mask_index] = 1.0
        return out

    def _unmask_probability(
        self, t: Tensor | int, s: Tensor | int | None, like: Tensor, index: Tensor | None
    ) -> Tensor:
        """``w_{t→s} = (ᾱ_s - ᾱ_t) / (1 - ᾱ_t)`` per row, ``(N,)`` (or 0-d), ``like``'s dtype."""
        s = t - 1 if s is None else s
        ab_t = at_steps(self._alpha_bars, t, like, index)
        ab_s = at_steps(self._alpha_bars, s, like, index)
        return (ab_s - ab_t) / (1.0 - ab_t)

    def q_probs(
        self,
        x0: Tensor,
        t: Tensor | int,
        *,
        index: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``q(x_t | x_0)``: ``(N, K + 1)`` for ``(N,)`` int64 classes ``x_0``."""
        onehot = F.one_hot(x0, self.num_classes + 1).to(dtype)
        keep = at_steps(self._alpha_bars, t, onehot, index)
        return keep * onehot + (1.0 - keep) * self._mask_vector(onehot)

    def q_sample(
        self,
        x0: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        *,
        index: Tensor | None = None,
    ) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_0)``: each token kept with probability ``ᾱ_t``, else masked.

        Args:
            x0: ``(N,)`` int64 classes in ``0..K-1``.
            t: steps in ``1..T``.
            generator: random source on ``x0``'s device.
            index: ``(N,)`` item of each row, or None.

        Returns:
            ``(N,)`` int64 ``x_t`` in ``0..K``.
        """
        u = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        keep = u < at_steps(self._alpha_bars, t, u, index)
        return torch.where(keep, x0, torch.full_like(x0, self.mask_index))

    def posterior_probs(
        self,
        x_t: Tensor,
        x0: Tensor,
        t: Tensor | int,
        s: Tensor | int | None = None,
        *,
        index: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``q(x_s | x_t, x_0)``, ``(N, K + 1)`` (``s = t - 1`` when None).

        Rows with ``x_t`` unmasked are one-hot at ``x_t`` (the only value consistent with
        ``x_0 = x_t``).
        """
        onehot_x0 = F.one_hot(x0, self.num_classes + 1).to(dtype)
        w = self._unmask_probability(t, s, onehot_x0, index)
        masked = w * onehot_x0 + (1.0 - w) * self._mask_vector(onehot_x0)
        stay = F.one_hot(x_t, self.num_classes + 1).to(dtype)
        return torch.where((x_t == self.mask_index).unsqueeze(-1), masked, stay)

    def reverse_probs(
        self,
        logits: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        s: Tensor | int | None = None,
        *,
        index: Tensor | None = None,
    ) -> Tensor:
        """``p(x_s | x_t) = Σ_{x_0} q(x_s | x_t, x_0) softmax(logits)_{x_0}``, ``(N, K + 1)``.

        Args:
            logits: ``(N, K)`` predicted logits of the clean class.
            x_t: ``(N,)`` int64 current states in ``0..K``.
            t: current steps in ``1..T``.
            s: target steps ``0 ≤ s < t``; None: ``t - 1``.
            index: ``(N,)`` item of each row, or None.

        Returns:
            Probabilities in ``logits``' dtype; unmasked rows are one-hot at ``x_t``.
        """
        self._check_logits(logits)
        w = self._unmask_probability(t, s, logits, index)
        masked = torch.cat(
            [w * torch.softmax(logits, dim=-1), (1.0 - w).expand_as(logits[..., :1])], dim=-1
        )
        stay = F.one_hot(x_t, self.num_classes + 1).to(logits.dtype)
        return torch.where((x_t == self.mask_index).unsqueeze(-1), masked, stay)

    def reverse_jump(
        self,
        logits: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        s: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        *,
        index: Tensor | None = None,
        fixed: Tensor | None = None,
    ) -> Tensor:
        """Draw ``x_s ~ p(x_s | x_t)`` (:meth:`reverse_probs`); ``s = t - 1`` is the ancestral step.

        Args:
            logits: ``(N, K)`` predicted logits of the clean class.
            x_t: ``(N,)`` int64 current states in ``0..K``.
            t: current steps in ``1..T``.
            s: target steps ``0 ≤ s < t``; None: ``t - 1``. At ``s = 0`` every token is unmasked.
            generator: random source on ``x_t``'s device.
            index: ``(N,)`` item of each row, or None.
            fixed: ``(N,)`` bool, tokens kept as they are (e.g. given atom types), or None.

        Returns:
            ``(N,)`` int64 ``x_s``; unmasked and fixed tokens are unchanged.
        """
        probs = self.reverse_probs(logits, x_t, t, s, index=index)
        draw = torch.multinomial(probs.clamp(min=0.0), 1, generator=generator).squeeze(-1)
        keep = x_t != self.mask_index
        if fixed is not None:
            keep = keep | fixed.to(device=x_t.device, dtype=torch.bool)
        return torch.where(keep, x_t, draw)

    def loss(
        self,
        logits: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor | int,
        *,
        index: Tensor | None = None,
        reduction: str = "mean",
    ) -> tuple[Tensor, Tensor]:
        """The variational-bound term and the auxiliary cross-entropy (module docstring).

        Args:
            logits: ``(N, K)`` predicted logits of ``x_0`` given ``x_t``.
            x0: ``(N,)`` int64 clean classes.
            x_t: ``(N,)`` int64 corrupted states (from :meth:`q_sample` at ``t``).
            t: steps in ``1..T``.
            index: ``(N,)`` item of each row, or None.
            reduction: ``"mean"`` or ``"sum"`` over rows, or ``"none"`` (per row, ``(N,)``).

        Returns:
            ``(L_vb, L_ce)`` in nats; the hybrid loss is ``L_vb + λ L_ce``.
        """
        self._check_logits(logits)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, not {reduction!r}")
        ce = F.cross_entropy(logits, x0, reduction="none")
        w = self._unmask_probability(t, None, ce, index)
        vb = (x_t == self.mask_index).to(ce.dtype) * w * ce
        if reduction == "mean":
            return vb.mean(), ce.mean()
        if reduction == "sum":
            return vb.sum(), ce.sum()
        return vb, ce

    def prior_sample(self, num: int, *, device: torch.device | str | None = None) -> Tensor:
        """``x_T``: ``(num,)`` int64, all masked."""
        return torch.full((num,), self.mask_index, dtype=torch.long, device=device)
