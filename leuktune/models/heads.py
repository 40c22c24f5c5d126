"""Classifier heads on a backbone's pooled features."""

from __future__ import annotations

from torch import nn


class LinearHead(nn.Sequential):
    """Dropout -> linear: the 'without fully connected layers' variant of the papers."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


def build_head(kind: str, in_features: int, num_classes: int, dropout: float) -> nn.Module:
    if kind == "linear":
        return LinearHead(in_features, num_classes, dropout)
    raise ValueError(f"unknown head {kind!r}")
