"""Backbone + head = the classifier a trial trains."""

from __future__ import annotations

import timm
import torch
from torch import nn

from leuktune.config import ModelConfig
from leuktune.models.heads import build_head


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(model: ModelConfig, num_classes: int) -> Classifier:
    """A concrete (fully drawn) model config -> the network, randomly initialised."""
    # num_classes=0 makes timm return pooled features, so every head sees the same input.
    backbone = timm.create_model(model.backbone, pretrained=False, num_classes=0)
    head = build_head(model.head, backbone.num_features, num_classes, model.dropout)
    return Classifier(backbone, head)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
