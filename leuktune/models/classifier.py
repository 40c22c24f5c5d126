"""Backbone + head = the classifier a trial trains, with its unfreeze depth applied."""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from leuktune.config import ModelConfig
from leuktune.models.backbones import Backbone, create_backbone
from leuktune.models.heads import DEFAULT_ACTIVATION, build_head



class Classifier(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.unfreeze_depth = len(backbone.groups)  # effective: stage groups trainable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return self.head(features if self.head.needs_spatial else self.backbone.pool(features))

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        # A frozen stage must stay what it was: its BatchNorm keeps its running statistics.
        for module in self.backbone.modules():
            params = list(module.parameters(recurse=False))
            if isinstance(module, _BatchNorm) and params and not any(p.requires_grad for p in params):
                module.eval()
        return self


def build_model(model: ModelConfig, num_classes: int, image_size: int) -> Classifier:
    """A concrete (fully drawn) model config -> the network, unfreeze depth applied."""
    activation = None if model.activation == "default" else model.activation
    backbone = create_backbone(model.backbone, activation=activation, image_size=image_size,
                               pretrained=model.pretrained, pretrained_path=model.pretrained_path,
                               allow_download=model.allow_download)
    head = build_head(
        model.head, in_features=backbone.num_features, spatial_features=backbone.feature_dim,
        num_classes=num_classes, dropout=model.dropout,
        activation=activation or DEFAULT_ACTIVATION[model.head],
        mlp_hidden=model.mlp_hidden, mlp_layers=model.mlp_layers,
        attention_heads=model.attention_heads, attention_dim=model.attention_dim,
        probe_l2=model.probe_l2, knn_k=model.knn_k,
    )
    classifier = Classifier(backbone, head)
    # A probe is fitted on a frozen backbone's features, whatever depth was drawn.
    set_unfreeze_depth(classifier, 0 if head.fitted else model.unfreeze_depth)
    return classifier


def set_unfreeze_depth(classifier: Classifier, depth: int | str) -> int:
    """Train the top ``depth`` stage groups of the backbone ('all' = every group); the head always trains.
    Returns the effective depth (a request beyond the backbone's groups means all of them)."""
    groups = classifier.backbone.groups
    effective = len(groups) if depth == "all" else min(int(depth), len(groups))
    trainable = set(itertools.chain.from_iterable(groups[len(groups) - effective:])) if effective else set()
    for name, param in classifier.backbone.model.named_parameters():
        param.requires_grad = name in trainable
    classifier.unfreeze_depth = effective
    classifier.train(classifier.training)
    return effective


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
