"""Optimiser and learning-rate schedule of a trial, stepped once per batch."""

from __future__ import annotations

import math

import torch
from torch import nn

from leuktune.config import TrainConfig


def param_groups(classifier: nn.Module, lr: float, backbone_lr_mult: float, weight_decay: float) -> list[dict]:
    """Head at ``lr``, backbone at ``lr * backbone_lr_mult``; no weight decay on norms and biases."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in classifier.named_parameters():
        if not param.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        groups.setdefault((part, param.ndim <= 1), []).append(param)
    return [
        {"params": params, "lr": lr * (backbone_lr_mult if part == "backbone" else 1.0),
         "weight_decay": 0.0 if no_decay else weight_decay, "name": f"{part}{'_no_decay' if no_decay else ''}"}
        for (part, no_decay), params in sorted(groups.items())
    ]


# Warm-up starts at lr / 25, as one-cycle does, so both schedules begin alike.
_WARMUP_START = 1 / 25


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    # On a GPU, one fused kernel per parameter group updates every tensor of it.
    groups = param_groups(model, train.lr, train.backbone_lr_mult, train.weight_decay)
    fused = bool(groups) and all(p.is_cuda for p in model.parameters())
    # A kNN probe trains nothing: one empty group keeps the state a trial saves the same shape.
    return torch.optim.AdamW(groups or [{"params": [], "lr": train.lr, "name": "none"}], fused=fused or None)


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    total = max(1, steps_per_epoch * train.epochs)
    warmup = min(round(train.warmup_epochs * steps_per_epoch), total - 1)
    if train.schedule == "onecycle" and total >= 4:
        # One-cycle's rise needs two steps and its fall two more; a shorter run anneals as cosine.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            pct_start=min(max(warmup, 2), total - 2) / total, div_factor=1 / _WARMUP_START,
            anneal_strategy="cos")

    def factor(step: int) -> float:
        if step < warmup:
            return _WARMUP_START + (1 - _WARMUP_START) * step / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
