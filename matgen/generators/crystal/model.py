"""Joint diffusion over atom types, fractional coordinates and lattices (the DiffCSP / MatterGen
family): the training objective and the samplers, around a :class:`CrystalDenoiser`.

Three corruption processes share one discrete time ``t = 1 .. T`` per crystal:

- **lattice**: DDPM (cosine schedule) on ``L̃ = L / n^{1/3}`` (rows, Å; ``n`` atoms), so that
  the prior ``N(0, I)`` has the scale of one atom's cell whatever the crystal's size:
  ``L̃_t = sqrt(ᾱ_t) L̃_0 + sqrt(1 - ᾱ_t) ε``; the denoiser predicts ``ε``;
- **fractional coordinates**: variance-exploding wrapped normal on the torus,
  ``f_t = f_0 + σ_t z mod 1`` with geometric ``σ_t``; the denoiser predicts the score
  ``∇_{f_t} log p(f_t | f_0)`` divided by ``sqrt(E|score|^2)`` (DiffCSP's normalisation);
- **types**: D3PM with an absorbing mask state; the denoiser predicts the clean types' logits.

A fraction ``csp_fraction`` of the training crystals keep their types clean (no type loss):
one network then serves both crystal structure prediction (types given) and de novo generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from matgen.generators.crystal.conditioning import ConditionEmbedding, PropertySpec
from matgen.generators.crystal.dataset import CrystalBatch
from matgen.generators.crystal.denoiser import CrystalDenoiser
from matgen.generators.crystal.denoiser_config import CrystalDenoiserConfig
from matgen.generators.diffusion import (
    AbsorbingD3PM,
    GaussianDDPM,
    TorusDiffusion,
    sample_timesteps,
    spaced_timesteps,
)

__all__ = ["CrystalDiffusion", "CrystalDiffusionConfig"]


@dataclass(frozen=True)
class CrystalDiffusionConfig:
    """The processes, the loss and the denoiser of a :class:`CrystalDiffusion`.

    Attributes:
        denoiser: the network's configuration (its ``elements`` are the vocabulary).
        timesteps: ``T``.
        sigma_min, sigma_max: ends of the geometric σ schedule of the coordinates.
        csp_fraction: share of training crystals whose types stay clean.
        weights: loss weights ``lattice``, ``coords``, ``types``.
        type_ce_weight: weight of D3PM's auxiliary cross-entropy beside the variational bound.
        max_atoms: largest crystal the model generates.
        properties: scalar conditions, each ``{"name", "low", "high"}`` (a training-data
            column and the range of its embedding basis); empty: none.
        chemsys_condition: condition on the chemical system (the set of elements).
        cond_dropout: share of training crystals whose conditions are dropped (the
            unconditional branch of classifier-free guidance).
        lattice_clip: bound on the entries of the sampler's clean-lattice estimate, in units
            of ``L / n^{1/3}`` (Å; a 20-atom cell with a 27 Å axis reaches 10).

    A conditional model needs ``denoiser.cond_dim > 0``; see
    :mod:`matgen.generators.crystal.conditioning`.
    """

    denoiser: CrystalDenoiserConfig
    timesteps: int = 1000
    sigma_min: float = 0.005
    sigma_max: float = 0.5
    csp_fraction: float = 0.5
    weights: dict[str, float] = field(
        default_factory=lambda: {"lattice": 1.0, "coords": 1.0, "types": 1.0}
    )
    type_ce_weight: float = 0.01
    max_atoms: int = 20
    properties: tuple[dict[str, Any], ...] = ()
    chemsys_condition: bool = False
    cond_dropout: float = 0.1
    lattice_clip: float = 10.0

    def __post_init__(self) -> None:
        conditional = bool(self.properties) or self.chemsys_condition
        if conditional and self.denoiser.cond_dim <= 0:
            raise ValueError("conditions need a denoiser with cond_dim > 0")

    @property
    def conditional(self) -> bool:
        return bool(self.properties) or self.chemsys_condition

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["denoiser"] = self.denoiser.to_dict()
        data["properties"] = [dict(p) for p in self.properties]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrystalDiffusionConfig:
        data = dict(data)
        data["denoiser"] = CrystalDenoiserConfig.from_dict(data["denoiser"])
        data["properties"] = tuple(dict(p) for p in data.get("properties", ()))
        return cls(**data)


class CrystalDiffusion(nn.Module):
    """The denoiser with its three corruption processes; see the module docstring.

    Args:
        config: processes, loss and network.
        atom_counts: ``atom_counts[n]`` = training crystals with ``n`` atoms (the de novo prior
            over sizes); None: uniform over ``1..max_atoms``.
    """

    def __init__(
        self, config: CrystalDiffusionConfig, atom_counts: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.denoiser = CrystalDenoiser(config.denoiser)
        T = config.timesteps
        counts = torch.zeros(config.max_atoms + 1, dtype=torch.float64)
        if atom_counts is None:
            counts[1:] = 1.0
        else:
            given = torch.as_tensor(list(atom_counts), dtype=torch.float64)[: config.max_atoms + 1]
            counts[: len(given)] = given
        if counts.sum() <= 0:
            raise ValueError("atom_counts has no crystal of 1..max_atoms atoms")
        self.register_buffer("atom_counts", counts, persistent=False)
        self.lattice_process = GaussianDDPM(T)
        self.coord_process = TorusDiffusion(
            T, sigma_min=config.sigma_min, sigma_max=config.sigma_max
        )
        self.type_process = AbsorbingD3PM(config.denoiser.num_classes, T)
        self.conditioner = (
            ConditionEmbedding(
                config.denoiser.cond_dim,
                [PropertySpec(**p) for p in config.properties],
                config.denoiser.num_classes if config.chemsys_condition else 0,
            )
            if config.conditional
            else None
        )
        self.metadata: dict[str, Any] = {}

    @property
    def elements(self) -> tuple[int, ...]:
        return self.config.denoiser.elements

    # ------------------------------------------------------------------ training
    def loss(
        self, batch: CrystalBatch, *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Training loss of one batch: ``{"loss", "lattice", "coords", "types"}`` (means).

        Lattice: ``|ε̂ - ε|²``; coordinates: ``|ŝ - ∇ log p / √λ(σ_t)|²`` (DiffCSP's
        normalised score); types: D3PM's bound plus ``type_ce_weight`` times its auxiliary
        cross-entropy, over the crystals whose types were corrupted.
        """
        cfg = self.config
        device, dtype = batch.frac.device, batch.frac.dtype
        B = batch.num_graphs
        t = sample_timesteps(B, cfg.timesteps, generator=generator, device=device)
        scale = batch.n_atoms.to(dtype).pow(1.0 / 3.0)[:, None, None]
        lattice_t, eps = self.lattice_process.q_sample(batch.lattice / scale, t, generator)
        frac_t, score = self.coord_process.q_sample(batch.frac, t, generator, index=batch.batch)
        target = score / self.coord_process.score_scale(t, batch.frac, index=batch.batch)
        t_atom = t[batch.batch]
        csp = (torch.rand(B, device=device, generator=generator) < cfg.csp_fraction)[batch.batch]
        types_t = torch.where(
            csp, batch.types, self.type_process.q_sample(batch.types, t_atom, generator)
        )
        conditions = None
        if self.conditioner is not None:
            drop = torch.rand(B, device=device, generator=generator) < cfg.cond_dropout
            conditions = self.conditioner(
                batch.properties,
                self.element_sets(batch) if cfg.chemsys_condition else None,
                batch_size=B,
                drop=drop,
                dtype=dtype,
                device=device,
            )
        out = self.denoiser(
            types_t,
            frac_t,
            lattice_t * scale,
            batch.batch,
            t.to(dtype) / cfg.timesteps,
            conditions=conditions,
        )
        losses = {
            "lattice": (out["lattice_eps"] - eps).pow(2).mean(),
            "coords": (out["frac_score"] - target).pow(2).mean(),
        }
        denovo = ~csp
        if bool(denovo.any()):
            vb, ce = self.type_process.loss(
                out["type_logits"][denovo], batch.types[denovo], types_t[denovo], t_atom[denovo]
            )
            losses["types"] = vb + cfg.type_ce_weight * ce
        else:
            losses["types"] = out["type_logits"].sum() * 0.0
        w = cfg.weights
        losses["loss"] = sum(w.get(k, 1.0) * losses[k] for k in ("lattice", "coords", "types"))
        return losses

    def element_sets(self, batch: CrystalBatch) -> torch.Tensor:
        """``(B, K)`` multi-hot element sets (chemical systems) of a batch's crystals."""
        K = self.config.denoiser.num_classes
        hot = torch.zeros(batch.num_graphs, K, device=batch.types.device)
        return hot.index_put_(
            (batch.batch, batch.types), torch.ones_like(batch.types, dtype=hot.dtype)
        )

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_tensors(
        self,
        n_atoms: torch.Tensor | Sequence[int],
        *,
        types: torch.Tensor | None = None,
        steps: int | None = None,
        step_lr: float = 1e-5,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        properties: dict[str, torch.Tensor] | None = None,
        chemsys: torch.Tensor | None = None,
        guidance: float = 0.0,
        fixed_types: torch.Tensor | None = None,
        allowed_types: torch.Tensor | None = None,
    ) -> CrystalBatch:
        """Run the reverse processes for crystals of ``n_atoms`` atoms.

        Each step (``t → s``) evaluates the denoiser, optionally first for a Langevin corrector
        move of the coordinates at level ``σ_t`` (DiffCSP's predictor-corrector), then takes
        the reverse jump of each process: the VE torus jump for coordinates, a DDIM-type jump
        for the lattice (``eta = 1`` and ``s = t - 1``: DDPM's ancestral step), the absorbing
        reverse jump for types.

        Args:
            n_atoms: ``(B,)`` atoms per crystal.
            types: ``(N,)`` element classes (crystal structure prediction) or None (de novo).
            steps: sampler steps (``T`` when None; fewer take evenly spaced jumps).
            step_lr: corrector step ``γ`` (step size ``γ (σ_t / σ_1)^2``); 0: no corrector,
                one network call per step.
            eta: lattice stochasticity (1: ancestral; 0: deterministic DDIM).
            generator: random source on the model's device; a seeded sampler repeats exactly.
            properties: ``{name: (B,)}`` target values of the model's scalar conditions.
            chemsys: ``(B, K)`` multi-hot chemical systems to condition on.
            guidance: classifier-free guidance weight ``w`` (0: plain conditional sampling;
                each network evaluation then runs twice).
            fixed_types: ``(N,)`` bool, atoms whose ``types`` entry is kept while the others
                are generated (partial compositions); needs ``types``.
            allowed_types: ``(K,)`` bool, the element classes generated types may take (a
                chemical system); the others get zero probability at every step.

        Returns:
            The final batch (``types``, ``frac`` in [0, 1), ``lattice`` in Å).
        """
        cfg = self.config
        p = next(self.parameters())
        device, dtype = p.device, p.dtype
        n_atoms = torch.as_tensor(n_atoms, device=device, dtype=torch.long)
        B, N = int(n_atoms.numel()), int(n_atoms.sum())
        batch = torch.repeat_interleave(torch.arange(B, device=device), n_atoms)
        scale = n_atoms.to(dtype).pow(1.0 / 3.0)[:, None, None]
        mask = self.type_process.mask_index
        if types is None:
            if fixed_types is not None:
                raise ValueError("fixed_types needs types")
            keep = torch.zeros(N, device=device, dtype=torch.bool)
            x = torch.full((N,), mask, device=device, dtype=torch.long)
        else:
            x = torch.as_tensor(types, device=device, dtype=torch.long)
            if x.shape != (N,):
                raise ValueError(f"types has shape {tuple(x.shape)}, expected ({N},)")
            keep = (
                torch.ones(N, device=device, dtype=torch.bool)
                if fixed_types is None
                else torch.as_tensor(fixed_types, device=device, dtype=torch.bool)
            )
            x = torch.where(keep, x, torch.full_like(x, mask))
        lat = self.lattice_process.prior_sample((B, 3, 3), generator, dtype=dtype, device=device)
        frac = self.coord_process.prior_sample((N, 3), generator, dtype=dtype, device=device)
        times = spaced_timesteps(cfg.timesteps, steps or cfg.timesteps)

        cond = uncond = None
        if self.conditioner is not None:
            kwargs = {"batch_size": B, "dtype": dtype, "device": device}
            cond = self.conditioner(properties, chemsys, **kwargs)
            if guidance != 0.0:
                drop = torch.ones(B, dtype=torch.bool, device=device)
                uncond = self.conditioner(None, None, drop=drop, **kwargs)
        elif properties or chemsys is not None:
            raise ValueError("this model was trained without conditions")

        def denoise(f: torch.Tensor, t: int) -> dict[str, torch.Tensor]:
            tt = torch.full((B,), t / cfg.timesteps, device=device, dtype=dtype)
            out = self.denoiser(x, f, lat * scale, batch, tt, conditions=cond)
            if uncond is None:
                return out
            base = self.denoiser(x, f, lat * scale, batch, tt, conditions=uncond)
            return {k: (1 + guidance) * out[k] - guidance * base[k] for k in out}

        def score_of(out: dict[str, torch.Tensor], t: int) -> torch.Tensor:
            return out["frac_score"] * self.coord_process.score_scale(t, frac)

        for k, t in enumerate(times):
            s = times[k + 1] if k + 1 < len(times) else 0
            if step_lr > 0:
                out = denoise(frac, t)
                frac = self.coord_process.corrector_step(
                    score_of(out, t), frac, t, generator, gamma=step_lr
                )
            out = denoise(frac, t)
            frac = self.coord_process.predictor_step(score_of(out, t), frac, t, s, generator)
            lat = self._lattice_step(out["lattice_eps"], lat, t, s, eta, generator)
            if not bool(keep.all()):
                logits = out["type_logits"]
                if allowed_types is not None:
                    allowed = torch.as_tensor(allowed_types, device=device, dtype=torch.bool)
                    logits = logits.masked_fill(~allowed, float("-inf"))
                x = self.type_process.reverse_jump(logits, x, t, s, generator, fixed=keep)
        return CrystalBatch(types=x, frac=frac, lattice=lat * scale, batch=batch, n_atoms=n_atoms)

    def _lattice_step(
        self,
        eps: torch.Tensor,
        lat: torch.Tensor,
        t: int,
        s: int,
        eta: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Reverse lattice jump ``t → s`` through the clean-lattice estimate
        ``L̂_0 = (L̃_t - √(1 - ᾱ_t) ε̂) / √ᾱ_t``, clipped entrywise to ``±lattice_clip``
        (normalised units) before use, as DDPM samplers clip their images: near ``T``
        ``√ᾱ_t`` is tiny (5e-5 for the cosine schedule at ``t = T``) and would turn a small
        error of ``ε̂`` into an absurd cell. ``eta = 1`` and ``s = t - 1`` draws from the
        posterior ``q(L̃_{t-1} | L̃_t, L̂_0)`` (the ancestral step); otherwise a DDIM-type jump."""
        process = self.lattice_process
        clip = self.config.lattice_clip
        x0 = process.predict_x0(eps, lat, t).clamp(-clip, clip)
        if s == t - 1 and eta == 1.0:
            mean, var = process.posterior(x0, lat, t)
            noise = torch.randn(lat.shape, generator=generator, device=lat.device, dtype=lat.dtype)
            return mean + var.sqrt() * noise
        ab_t = process.schedule.alpha_bars[t - 1].to(lat)
        eps = (lat - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        return process.ddim_step(eps, lat, t, s, generator, eta=eta)

    def sample_atom_counts(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` crystal sizes drawn from the training histogram."""
        device = generator.device if generator is not None else self.atom_counts.device
        weights = self.atom_counts.to(device=device, dtype=torch.float64)
        return torch.multinomial(weights, n, replacement=True, generator=generator)

    def with_conditions(
        self,
        *,
        properties: Sequence[dict[str, Any]] = (),
        chemsys_condition: bool = False,
        cond_dim: int = 64,
        cond_dropout: float = 0.1,
    ) -> CrystalDiffusion:
        """A conditional copy for fine-tuning (MatterGen's adapters): the same weights plus
        zero-initialised adapters and fresh condition embeddings, so that it computes exactly
        what this model computes until training moves the adapters."""
        from dataclasses import replace

        denoiser = self.config.denoiser.replace(cond_dim=cond_dim)
        config = replace(
            self.config,
            denoiser=denoiser,
            properties=tuple(dict(p) for p in properties),
            chemsys_condition=chemsys_condition,
            cond_dropout=cond_dropout,
        )
        model = CrystalDiffusion(config, atom_counts=self.atom_counts.tolist())
        missing, unexpected = model.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(
            ".adapters." in k or k.startswith("conditioner.") for k in missing
        ), missing
        p = next(self.parameters())
        return model.to(device=p.device, dtype=p.dtype)
