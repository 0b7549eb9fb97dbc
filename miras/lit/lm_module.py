"""LightningModule for language modelling; the network is injected."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from miras.config import RunConfig, to_dict


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LanguageModelModule(L.LightningModule):
    """Next-token prediction with AdamW + warmup-cosine.

    Args:
        model: ``model(input_ids[B, T]) -> (logits[B, T, V], states)``, e.g. :class:`miras.models.LanguageModel`.
        config: the resolved run config; saved as hyperparameters (and so in every checkpoint).

    Logs ``train/loss``, ``train/lr``, ``val/loss``, ``val/ppl`` and ``val/accuracy`` (token-weighted over the
    validation set; the accuracy is the share of target tokens that are the argmax, which on MQAR is zoology's
    recall accuracy, its targets being the queried values alone).
    """

    def __init__(self, model: nn.Module, config: RunConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.save_hyperparameters({"config": to_dict(config)})
        self.val_loss = MeanMetric()
        self.val_accuracy = MeanMetric()

    def model_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean token cross-entropy of a batch, its logits [B, T, V] and the mask [B, T] of its target tokens."""
        logits, _ = self.model(batch["input_ids"], cu_seqlens=batch.get("cu_seqlens"))
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return loss, logits, labels != -100

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.model_step(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, scored = self.model_step(batch)
        n_tokens = int(scored.sum())
        hits = (logits.argmax(-1) == batch["labels"])[scored].float()
        self.val_loss.update(loss, weight=n_tokens)
        self.val_accuracy.update(hits.mean(), weight=n_tokens)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss), sync_dist=False)
        self.log("val/accuracy", self.val_accuracy.compute(), sync_dist=False)
        self.val_accuracy.reset()

    def configure_optimizers(self):
        optim = self.config.optim
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and not name.startswith("embed.") else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=optim.lr,
            betas=(optim.beta1, optim.beta2),
            eps=optim.eps,
        )
        total = self.config.steps()
        warmup = max(1, int(optim.warmup_fraction * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, optim.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
