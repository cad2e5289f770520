"""Lightning wrapper of :class:`~matgen.generators.crystal.model.CrystalDiffusion`: the training
module (loss from the model, EMA weights, AdamW with a plateau schedule) and the data module."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from matgen.generators.crystal.checkpoint import save_crystal_diffusion
from matgen.generators.crystal.dataset import CrystalBatch, CrystalDataset
from matgen.generators.crystal.model import CrystalDiffusion, CrystalDiffusionConfig

__all__ = ["BestCrystalExport", "CrystalDataModule", "CrystalDiffusionModule"]


class CrystalDiffusionModule(pl.LightningModule):
    """Trains a :class:`CrystalDiffusion`; validation scores the EMA weights on the same loss
    (seeded noise, so epochs compare).

    Args:
        config: the model's configuration as a dict (:meth:`CrystalDiffusionConfig.to_dict`).
        atom_counts: the training set's histogram of atoms per crystal (the de novo prior).
        lr, weight_decay, ema_decay: optimiser and EMA settings.
        scheduler_patience, scheduler_factor: ReduceLROnPlateau on the validation loss.
    """

    def __init__(
        self,
        config: dict[str, Any],
        atom_counts: list[int],
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        ema_decay: float = 0.999,
        scheduler_patience: int = 30,
        scheduler_factor: float = 0.6,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model_config = CrystalDiffusionConfig.from_dict(config)
        self.model = CrystalDiffusion(model_config, atom_counts=atom_counts)
        self.ema = CrystalDiffusion(model_config, atom_counts=atom_counts).requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())

    def training_step(self, batch: CrystalBatch, batch_idx: int) -> torch.Tensor:
        losses = self.model.loss(batch)
        n = batch.num_graphs
        for key, value in losses.items():
            self.log(f"train_{key}", value.detach(), batch_size=n, prog_bar=key == "loss")
        return losses["loss"]

    def on_train_batch_end(self, outputs: Any, batch: CrystalBatch, batch_idx: int) -> None:
        decay = self.hparams.ema_decay
        current = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, p in self.ema.named_parameters():
                p.lerp_(current[name], 1.0 - decay)

    def validation_step(self, batch: CrystalBatch, batch_idx: int) -> None:
        generator = torch.Generator(device=batch.frac.device).manual_seed(1000 + batch_idx)
        losses = self.ema.loss(batch, generator=generator)
        for key, value in losses.items():
            self.log(f"val_{key}", value, batch_size=batch.num_graphs, prog_bar=key == "loss")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            factor=self.hparams.scheduler_factor,
            patience=self.hparams.scheduler_patience,
            min_lr=1e-5,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": "val_loss",
                "interval": "epoch",
                "strict": False,
            },
        }

    def averaged_model(self) -> CrystalDiffusion:
        """A copy of the EMA weights, in eval mode."""
        model = CrystalDiffusion(self.ema.config, atom_counts=self.hparams.atom_counts)
        model.load_state_dict(self.ema.state_dict())
        return model.to(next(self.ema.parameters()).dtype).eval()


class CrystalDataModule(pl.LightningDataModule):
    """Serves :class:`CrystalDataset` items as :class:`CrystalBatch` batches."""

    def __init__(
        self,
        train: CrystalDataset,
        val: CrystalDataset,
        *,
        batch_size: int,
        val_batch_size: int | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.seed = int(seed)
        self.dtype = dtype

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=CrystalBatch.collate,
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=len(self.train_set) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set, batch_size=self.val_batch_size, collate_fn=CrystalBatch.collate
        )

    def transfer_batch_to_device(
        self, batch: CrystalBatch, device: torch.device, dataloader_idx: int
    ) -> CrystalBatch:
        return batch.to(device, self.dtype)


class BestCrystalExport(pl.Callback):
    """Writes the EMA weights (weights-only format) whenever ``val_loss`` improves."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.best = float("inf")
        self.train_seconds = 0.0
        self._epoch_start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: CrystalDiffusionModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: CrystalDiffusionModule) -> None:
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: CrystalDiffusionModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is None or float(loss) >= self.best:
            return
        self.best = float(loss)
        meta = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "train_seconds": round(self.train_seconds, 1),
        }
        meta |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        save_crystal_diffusion(pl_module.averaged_model(), self.path, metadata=meta)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
