"""Whether every model a search may draw can run on the experiment's images, checked before
Ray starts: each backbone built on the meta device (no memory, no weights) with each head."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from leuktune.config import ConfigError, Distribution, ExperimentConfig, representatives
from leuktune.models.classifier import build_model


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
