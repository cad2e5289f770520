"""Lightning wrapper of a ``transformers`` causal LM for the text generators: next-token loss
on the body tokens, AdamW with warmup + cosine decay, optional EMA weights, and the callback
that exports the best model directory."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

__all__ = ["BestTextExport", "TextLMModule", "cosine_with_warmup"]


def cosine_with_warmup(step: int, progress: float, *, warmup_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warmup over ``warmup_steps``, then cosine decay to
    ``min_ratio`` as ``progress`` goes from 0 to 1.

    .. math::  f = \\min(1, s / s_w) \\cdot \\big(r + (1 - r) \\tfrac12 (1 + \\cos \\pi p)\\big)
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    p = min(max(progress, 0.0), 1.0)
    return warm * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))


class TextLMModule(pl.LightningModule):
    """Trains a causal LM on batches of :func:`~matgen.training.lm_data.collate_examples`.

    The schedule's progress is the larger of ``step / total_steps`` and ``train time /
    max_seconds`` (when a time budget is set), so a run cut by ``max_time`` still ends its
    cosine decay.

    Args:
        model: a ``transformers`` causal LM (or a peft model around one).
        lr: peak learning rate.
        weight_decay: AdamW decay on matrices (not on biases, norms or embeddings).
        betas: AdamW betas.
        warmup_steps: linear warmup.
        total_steps: steps of the cosine decay.
        max_seconds: time budget of the decay (None: steps only).
        min_lr_ratio: final learning rate over peak.
        ema_decay: keep exponential moving averages of the weights (None: off).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 200,
        total_steps: int = 10_000,
        max_seconds: float | None = None,
        min_lr_ratio: float = 0.1,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False) if ema_decay else None

    # ------------------------------------------------------------------ schedule
    def progress(self) -> float:
        """Fraction of the decay done (steps or time budget, whichever is further)."""
        hp = self.hparams
        p = self.global_step / max(1, hp.total_steps)
        if hp.max_seconds and self._trainer is not None:
            timers = [c for c in self.trainer.callbacks if isinstance(c, pl.callbacks.Timer)]
            if timers:
                p = max(p, timers[0].time_elapsed("train") / float(hp.max_seconds))
        return p

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        factor = cosine_with_warmup(
            self.global_step,
            self.progress(),
            warmup_steps=self.hparams.warmup_steps,
            min_ratio=self.hparams.min_lr_ratio,
        )
        for group in self.optimizers().param_groups:
            group["lr"] = self.hparams.lr * factor

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        n = batch["input_ids"].shape[0]
        self.log("train_loss", loss.detach(), batch_size=n, prog_bar=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=n)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is None:
            return
        decay = float(self.hparams.ema_decay)
        current = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, p in self.ema.named_parameters():
                p.lerp_(current[name].detach(), 1.0 - decay)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        model = self.ema if self.ema is not None else self.model
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            target.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        tokens = (target != -100).sum()
        # a token-weighted mean over the whole validation set
        self.log("val_loss", loss / tokens, batch_size=int(tokens), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            matrix = p.ndim >= 2 and "wte" not in name and "wpe" not in name and "embed" not in name
            (decay if matrix else no_decay).append(p)
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
        )

    def export_model(self) -> torch.nn.Module:
        """The weights to ship (EMA when kept), LoRA adapters merged, as a plain float32 model
        in eval mode (a copy: training is unaffected)."""
        source = self.ema if self.ema is not None else self.model
        model = copy.deepcopy(source)
        if hasattr(model, "merge_and_unload"):  # a peft model
            model = model.merge_and_unload()
        return model.float().eval()


class BestTextExport(pl.Callback):
    """Calls ``save(model, metadata)`` with :meth:`TextLMModule.export_model` whenever
    ``val_loss`` improves; the best loss survives a resume."""

    def __init__(self, save: Callable[[torch.nn.Module, dict[str, Any]], Path]) -> None:
        self.save = save
        self.best = float("inf")
        self.best_step = -1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: TextLMModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is None or not math.isfinite(float(loss)) or float(loss) >= self.best:
            return
        self.best = float(loss)
        self.best_step = int(trainer.global_step)
        meta = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "val_loss": self.best,
        }
        self.save(pl_module.export_model(), meta)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])
        self.best_step = int(state_dict.get("best_step", -1))
