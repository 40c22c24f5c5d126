"""Class imbalance: loss weights, and the order in which an epoch visits the training split."""

from __future__ import annotations

import numpy as np


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """1 / the class's share of ``labels``, scaled so a balanced split gives all ones.
    A class with no training images gets 0: nothing to weigh."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, len(labels) / (num_classes * counts), 0.0)
    return weights.astype(np.float32)


def epoch_order(train_idx: np.ndarray, labels: np.ndarray, num_classes: int, balance: str,
                seed: int, epoch: int) -> np.ndarray:
    """Which training rows epoch ``epoch`` visits, in order. Seeded by (seed, epoch) so every
    DDP rank draws the same order, and a resumed trial the same as it would have."""
    rng = np.random.default_rng([seed, epoch])
    if balance != "sampler":
        return rng.permutation(train_idx)
    per_row = class_weights(labels[train_idx], num_classes)[labels[train_idx]].astype(np.float64)
    return rng.choice(train_idx, size=len(train_idx), replace=True, p=per_row / per_row.sum())
