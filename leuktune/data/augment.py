"""Augmentation on batches already on the device: no per-image Python, no extra decode."""

from __future__ import annotations

import torch

from leuktune.config import AugmentConfig


def augment_batch(x: torch.Tensor, augment: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random per-sample flips and right-angle turns (a cell has no up or left)."""
    if not augment.flip:
        return x
    n = x.shape[0]
    draw = torch.rand(n, 3, generator=generator, device="cpu").to(x.device) < 0.5
    x = torch.where(draw[:, 0, None, None, None], x.flip(-1), x)
    x = torch.where(draw[:, 1, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(draw[:, 2, None, None, None], x.transpose(-1, -2), x)
    return x
