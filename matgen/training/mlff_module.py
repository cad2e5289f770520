"""Lightning wrappers for the MACE potential: the training module and the data module.

Loss (per batch, MACE's weighted energy/force/stress loss):

    L = w_E mean_b ((E_b - Ê_b) / N_b)^2 + w_F mean_{i,k} (F_ik - F̂_ik)^2 + w_σ mean_{b,kl} (σ_bkl - σ̂_bkl)^2

An exponential moving average of the weights (decay ``ema_decay``) is what validation scores and
what is exported. In the last ``stage_two_fraction`` of the epochs, or of the time budget when
the trainer has one (``max_time``) and it runs out first, the weights switch to ``stage_two``
(MACE's second stage, which raises the energy weight) and the learning rate drops.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from matgen.data.batch import AtomsBatch
from matgen.mlff.checkpoint import save_model
from matgen.mlff.config import MACEConfig
from matgen.mlff.mace import MACE
from matgen.mlff.statistics import batch_errors

__all__ = ["BestEMAExport", "LossWeights", "MLFFDataModule", "MLFFModule", "stage_two_due"]


def stage_two_due(
    epoch: int,
    max_epochs: int,
    fraction: float,
    *,
    elapsed_s: float | None = None,
    budget_s: float | None = None,
) -> bool:
    """Whether the epoch about to start belongs to stage two: the last ``fraction`` of
    ``max_epochs``, or of the time budget ``budget_s`` (``elapsed_s`` spent) when one is set,
    whichever comes first. It is checked as each epoch starts, so a run stopped by its clock
    gets its second stage as long as an epoch is shorter than that last fraction."""
    if fraction <= 0:
        return False
    if max_epochs > 0 and epoch >= round(max_epochs * (1.0 - fraction)):
        return True
    return bool(budget_s) and elapsed_s is not None and elapsed_s >= budget_s * (1.0 - fraction)


@dataclass(frozen=True)
class LossWeights:
    energy: float = 1.0
    forces: float = 100.0
    stress: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.01
    weight_decay: float = 5e-7
    ema_decay: float = 0.99
    scheduler_patience: int = 50
    scheduler_factor: float = 0.8
    stage_two_fraction: float = 0.2
    stage_two: LossWeights = field(default_factory=lambda: LossWeights(1000.0, 100.0, 0.0))
    stage_two_lr: float = 1e-3


class MLFFModule(pl.LightningModule):
    """Trains a :class:`MACE` on energies, forces and (optionally) stresses.

    Args:
        model_config: the architecture, with training-set statistics already filled in.
        weights: loss weights of the first stage.
        optim: optimiser, EMA, scheduler and second-stage settings.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        *,
        weights: dict[str, float] | None = None,
        optim: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = MACE(MACEConfig.from_dict(model_config))
        self.weights = LossWeights(**(weights or {}))
        optim = dict(optim or {})
        if "stage_two" in optim and isinstance(optim["stage_two"], dict):
            optim["stage_two"] = LossWeights(**optim["stage_two"])
        self.optim = OptimConfig(**optim)
        # A fresh build, not a deepcopy: e3nn's generated modules copy badly.
        self.ema = MACE(self.model.config).requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())
        self._stage_two = False

    # ------------------------------------------------------------------ loss
    def current_weights(self) -> LossWeights:
        return self.optim.stage_two if self._stage_two else self.weights

    def loss(
        self, pred: dict[str, torch.Tensor], batch: AtomsBatch, w: LossWeights
    ) -> torch.Tensor:
        err = batch_errors(pred, batch)
        total = pred["energy"].new_zeros(())
        if w.energy and "energy_per_atom" in err:
            total = total + w.energy * err["energy_per_atom"].pow(2).mean()
        if w.forces and "forces" in err:
            total = total + w.forces * err["forces"].pow(2).mean()
        if w.stress and "stress" in err:
            total = total + w.stress * err["stress"].pow(2).mean()
        return total

    def _predict(self, model: MACE, batch: AtomsBatch, w: LossWeights, training: bool):
        return model(
            batch,
            forces=w.forces > 0 or not training,
            stress=(w.stress > 0 or not training) and bool(batch.pbc.any()),
            training=training,
        )

    def training_step(self, batch: AtomsBatch, batch_idx: int) -> torch.Tensor:
        w = self.current_weights()
        pred = self._predict(self.model, batch, w, training=True)
        loss = self.loss(pred, batch, w)
        self.log("train_loss", loss, batch_size=len(batch), prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: AtomsBatch, batch_idx: int) -> None:
        decay = self.optim.ema_decay
        current = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, p in self.ema.named_parameters():
                p.lerp_(current[name], 1.0 - decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stage_two"] = self._stage_two

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._stage_two = bool(checkpoint.get("stage_two", False))
        # Runs saved while the convolution was e3nn's TensorProduct carry its (constant,
        # empty) tensors; the path-by-path convolution rebuilds what it needs.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if ".conv_tp." in k]:
            del state[key]

    def on_train_epoch_start(self) -> None:
        elapsed = budget = None
        timer = next((c for c in self.trainer.callbacks if isinstance(c, pl.callbacks.Timer)), None)
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is not None:
            elapsed = timer.time_elapsed("train")
            budget = elapsed + remaining
        if not self._stage_two and stage_two_due(
            self.current_epoch,
            self.trainer.max_epochs or 0,
            self.optim.stage_two_fraction,
            elapsed_s=elapsed,
            budget_s=budget,
        ):
            self._stage_two = True
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = self.optim.stage_two_lr

    def validation_step(self, batch: AtomsBatch, batch_idx: int) -> None:
        model = self.ema
        with torch.enable_grad():
            pred = self._predict(model, batch, self.current_weights(), training=False)
        err = batch_errors(pred, batch)
        n = len(batch)
        # Scored with the current stage's weights: the best model of stage two is chosen on
        # stage two's loss (BestEMAExport starts afresh when the stage changes).
        self.log("val_loss", self.loss(pred, batch, self.current_weights()).detach(), batch_size=n)
        if "energy_per_atom" in err:
            self.log(
                "val_energy_mae_meV_atom", 1000 * err["energy_per_atom"].abs().mean(), batch_size=n
            )
            self.log(
                "val_energy_mae_meV",
                1000 * (err["energy_per_atom"] * batch.n_atoms).abs().mean(),
                batch_size=n,
                prog_bar=True,
            )
        if "forces" in err:
            self.log(
                "val_forces_mae_meV_A",
                1000 * err["forces"].abs().mean(),
                batch_size=batch.num_atoms,
                prog_bar=True,
            )
        if "stress" in err:
            self.log("val_stress_mae_meV_A3", 1000 * err["stress"].abs().mean(), batch_size=n)

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (decay if "weight" in name and "radial" not in name else no_decay).append(p)
        optimizer = torch.optim.Adam(
            [
                {"params": decay, "weight_decay": self.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.optim.lr,
            amsgrad=True,
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.optim.scheduler_factor, patience=self.optim.scheduler_patience
        )
        return {
            "optimizer": optimizer,
            # strict=False: epochs without validation (check_val_every_n_epoch > 1) keep the rate
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": "val_loss",
                "interval": "epoch",
                "strict": False,
            },
        }

    def averaged_model(self) -> MACE:
        """A copy of the EMA weights as a plain :class:`MACE`."""
        model = MACE(self.ema.config)
        model.load_state_dict(self.ema.state_dict())
        return model.to(next(self.ema.parameters()).dtype).eval()


class MLFFDataModule(pl.LightningDataModule):
    """Serves lists of single-configuration :class:`AtomsBatch` items (edges built once)."""

    def __init__(
        self,
        train: Sequence[AtomsBatch],
        val: Sequence[AtomsBatch],
        *,
        batch_size: int,
        val_batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_items = list(train)
        self.val_items = list(val)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.seed = int(seed)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_items,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=AtomsBatch.collate,
            generator=generator,
            drop_last=len(self.train_items) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_items, batch_size=self.val_batch_size, collate_fn=AtomsBatch.collate
        )

    def transfer_batch_to_device(
        self, batch: AtomsBatch, device: torch.device, dataloader_idx: int
    ):
        return batch.to(device)


class BestEMAExport(pl.Callback):
    """Writes the EMA weights in matgen's weights-only format whenever ``val_loss`` improves."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.best = float("inf")
        self.stage_two = False
        self.train_seconds = 0.0
        self._epoch_start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: MLFFModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: MLFFModule) -> None:
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: MLFFModule) -> None:
        if trainer.sanity_checking:
            return
        if pl_module._stage_two != self.stage_two:  # a new loss: compare within the stage only
            self.stage_two, self.best = pl_module._stage_two, float("inf")
        loss = trainer.callback_metrics.get("val_loss")
        if loss is None or float(loss) >= self.best:
            return
        self.best = float(loss)
        meta = {
            "epoch": int(trainer.current_epoch),
            "val_loss": self.best,
            "stage_two": self.stage_two,
            "train_seconds": round(self.train_seconds, 1),
        }
        meta |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        save_model(pl_module.averaged_model(), self.path, metadata=meta)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stage_two": self.stage_two, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])
        self.stage_two = bool(state_dict.get("stage_two", False))
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
