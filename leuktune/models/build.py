"""Backbone + head = the classifier a trial trains, with unfreeze depth and optimiser groups."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from leuktune.config import ConfigError, Distribution, ExperimentConfig, ModelConfig, representatives
from leuktune.models.backbones import Backbone, create_backbone
from leuktune.models.heads import build_head

# The head's activation when the experiment keeps the backbone's own ("default").
_HEAD_DEFAULT_ACTIVATION = {"mlp": "relu", "attention": "gelu", "linear": "relu"}


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
        activation=activation or _HEAD_DEFAULT_ACTIVATION[model.head],
        mlp_hidden=model.mlp_hidden, mlp_layers=model.mlp_layers,
        attention_heads=model.attention_heads, attention_dim=model.attention_dim,
    )
    classifier = Classifier(backbone, head)
    set_unfreeze_depth(classifier, model.unfreeze_depth)
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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


@dataclass(frozen=True)
class BackboneShape:
    name: str
    features: tuple[int, ...]
    pooled: int
    groups: int


def check_model_space(cfg: ExperimentConfig) -> list[BackboneShape]:
    """Build every backbone the search may draw on the meta device (no memory, no weights)
    and push one image of ``data.image_size`` through it with every head it may be paired
    with, so an impossible combination fails before Ray starts, with the reason. The other
    searched model fields take their first representative value."""
    fixed = {key: value.representatives()[0] for key, value in cfg.model
             if isinstance(value, Distribution) and key not in ("backbone", "head")}
    base = cfg.model.model_copy(update={**fixed, "pretrained": False, "unfreeze_depth": "all"})
    size = cfg.data.image_size
    shapes = []
    for name in representatives(cfg.model.backbone):
        for head in representatives(cfg.model.head):
            try:
                with torch.device("meta"):
                    model = build_model(base.model_copy(update={"backbone": name, "head": head}), 2, size)
                    features = model.backbone(torch.empty(2, 3, size, size))
                    if head == "attention" and features.ndim not in (3, 4):
                        raise ValueError(f"its features have shape {tuple(features.shape)}, no spatial tokens "
                                         "to attend over")
                    model.head(features if model.head.needs_spatial else model.backbone.pool(features))
            except Exception as err:  # the reason is what the researcher needs, whatever raised it
                raise ConfigError(
                    f"model.backbone {name!r} with head {head!r} cannot run on {size}px images "
                    f"(data.image_size): {type(err).__name__}: {str(err).splitlines()[0]}") from None
        shapes.append(BackboneShape(name, tuple(features.shape[1:]), model.backbone.num_features,
                                    len(model.backbone.groups)))
    return shapes
