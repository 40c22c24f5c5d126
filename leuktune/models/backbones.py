"""Backbones by name: any timm model, plus AlexNet and GoogLeNet through torchvision.

A ``Backbone`` returns the raw feature map (B, C, H, W) or tokens (B, N, C) from
``forward``, pooled features from ``pool`` (the model's own pooling, e.g. a ViT's class
token), and its parameters in stage groups from stem to top, the unit of unfreeze depth.
Stage groups come from timm's own ``group_matcher``, so one definition serves every
timm architecture.

Pretrained weights come from a local file (``pretrained_path``), a folder of
per-backbone files, or the Hugging Face cache; nothing is downloaded unless
``allow_download`` is set. A file may be a plain state dict (timm's, torchvision's) or a
DINO/DINOv2 training checkpoint as the foundation models' authors publish theirs (DinoBloom:
``{"teacher": {"backbone.<key>": ..., "dino_head.<key>": ...}}``): its backbone is taken and
converted by timm's own filter for the architecture (DINOv2 keys, position embeddings resampled
for ``data.image_size``). Models on the Hugging Face Hub are named as timm names them,
``hf-hub:<owner>/<model>``, and built from the local Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from pathlib import Path

import timm
import torch
from timm.layers import get_act_layer
from timm.models import group_parameters
from torch import nn

from leuktune.config import TORCHVISION_BACKBONES
from leuktune.errors import LeuktuneError
from leuktune.models import provenance


def hub_cache() -> str:
    """Where timm's pretrained weights are cached: the Hugging Face cache (HF_HOME)."""
    return os.environ.get("HF_HOME", "~/.cache/huggingface")

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class WeightsError(LeuktuneError, ValueError):
    """Pretrained weights that cannot be found or loaded, naming the backbone and the places looked."""


class Backbone(nn.Module):
    def __init__(self, name: str, model: nn.Module, groups: list[list[str]], activation: str, mean, std,
                 weights: str = provenance.RANDOM_INIT):
        super().__init__()
        self.name = name
        self.weights = weights  # the pretrained weights it loaded, as the leaderboard names them (provenance)
        self.model = model
        self.groups = groups  # parameter names per stage group, stem first
        self.activation = activation  # what the backbone's own layers use ("default" if unchanged)
        self.mean, self.std = tuple(mean), tuple(std)  # the normalisation its weights expect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features, pre_logits=True)

    @property
    def num_features(self) -> int:
        """Width of ``pool``'s output; larger than the feature channels where the model's own
        head has a pre-logits MLP (VGG: 512 channels, 4096 pooled)."""
        return getattr(self.model, "head_hidden_size", None) or self.model.num_features

    @property
    def feature_dim(self) -> int:
        """Channels of the un-pooled features (what an attention head attends over)."""
        return self.model.num_features


class BackboneError(LeuktuneError, RuntimeError):
    """A backbone that could not be built, naming it and the reason."""


def _unexpected_keyword(err: TypeError, keys) -> str | None:
    """The optional keyword a TypeError says the architecture does not take, if that is what it says."""
    text = str(err)
    return next((k for k in keys if "unexpected keyword" in text and f"'{k}'" in text), None)


def _timm_model(name: str, activation: str | None, image_size: int, **kwargs) -> tuple[nn.Module, str]:
    """Create with the activation and input size applied where the architecture takes them.

    An architecture that has no ``act_layer`` keeps its own activation (reported as
    "default"); ViT-likes need their input size up front (``img_size``). Any other error
    is the backbone's and is raised, naming it."""
    optional = {"img_size": image_size}
    if activation:
        optional["act_layer"] = get_act_layer(activation)
    while True:
        try:
            model = timm.create_model(name, num_classes=0, **optional, **kwargs)
            return model, activation if "act_layer" in optional else "default"
        except TypeError as err:
            dropped = _unexpected_keyword(err, optional)
            if dropped is None:
                raise BackboneError(f"backbone {name!r} could not be built: TypeError: {err}") from err
            del optional[dropped]


class _TorchvisionFeatures(nn.Module):
    """AlexNet/GoogLeNet cut before their classifier, with timm's forward_* interface."""

    def __init__(self, name: str):
        super().__init__()
        # torchvision's models only for a torchvision backbone
        import torchvision

        net = getattr(torchvision.models, name)(weights=None, **({"aux_logits": False, "init_weights": True}
                                                                   if name == "googlenet" else {}))
        if name == "alexnet":
            self.body = net.features
            self.num_features = 256
        else:  # googlenet: everything up to its global pool
            keep = [m for n, m in net.named_children() if n not in ("avgpool", "dropout", "fc", "aux1", "aux2")]
            self.body = nn.Sequential(*keep)
            self.num_features = 1024

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x, pre_logits=True):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def _load_file(module: nn.Module, path: Path, name: str) -> None:
    if path.suffix == ".safetensors":
        # safetensors only for a weights file in that format
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    # Classifier weights of another task are expected to be absent or unused.
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "classifier.", "head.fc."))]
    if missing:
        raise WeightsError(f"{name}: {path} does not fit the architecture; missing {missing[:5]}...")


def training_checkpoint_backbone(path: Path) -> dict[str, torch.Tensor] | None:
    """The backbone's state dict of a DINO/DINOv2-style training checkpoint (the teacher's
    ``backbone.*`` keys; its projection heads dropped), or None for any other file. Memory-mapped:
    a plain weights file costs no read here."""
    if path.suffix == ".safetensors":
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError):  # legacy format (cannot be mapped), or not torch's at all:
        return None  # not what DINOv2 trainings write; timm's loader says what is wrong with it
    teacher = state.get("teacher") if isinstance(state, dict) else None
    if not isinstance(teacher, dict):
        return None
    return {key.removeprefix("backbone."): value for key, value in teacher.items() if key.startswith("backbone.")}


def _load_training_checkpoint(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Load a training checkpoint's backbone through timm's filter for the architecture (the
    module that defines it), which renames DINOv2's keys and resamples position embeddings."""
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        state = convert(state, model)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise WeightsError(f"{name}: {path} does not fit the architecture; missing {result.missing_keys[:5]}...")


def check_patch_size(name: str, model: nn.Module, image_size: int) -> None:
    """A patch-embedding model (a ViT) sees whole patches only: an image size the patch does not
    divide would silently drop its last rows and columns."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        return
    step = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
    if image_size % step:
        below = image_size - image_size % step
        above = below + step
        nearest = f"{below} or {above}" if below else str(above)
        raise BackboneError(f"data.image_size {image_size} is not a multiple of backbone {name!r}'s patch size "
                            f"{step}; the nearest sizes it takes are {nearest}")


def find_weights_file(name: str, pretrained_path: Path | None) -> Path | None:
    """A file given directly, or ``<folder>/<backbone>.<ext>`` in a folder of per-backbone files."""
    if pretrained_path is None:
        return None
    path = Path(pretrained_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for base in (name, name.split(".")[0]):
            for suffix in WEIGHT_SUFFIXES:
                if (path / f"{base}{suffix}").is_file():
                    return path / f"{base}{suffix}"
    raise WeightsError(
        f"pretrained weights for backbone {name!r} not found: looked for {path} and "
        f"{path}/{name}{{{','.join(WEIGHT_SUFFIXES)}}}"
    )


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Forbid Hub downloads for the block. huggingface_hub reads HF_HUB_OFFLINE from the
    environment once, at import (timm has imported it by now), so the flag it consults,
    ``constants.HF_HUB_OFFLINE``, is what must be switched; setting the variable does nothing."""
    if not offline:
        yield
        return
    # huggingface_hub only when pretrained weights are looked for
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def create_backbone(name: str, *, activation: str | None = None, image_size: int = 224,
                    pretrained: bool = False, pretrained_path: Path | None = None,
                    allow_download: bool = False) -> Backbone:
    """Build a backbone; with ``pretrained``, load weights from a file or the local HF cache."""
    weights = find_weights_file(name, pretrained_path) if pretrained else None
    if name in TORCHVISION_BACKBONES:
        model = _TorchvisionFeatures(name)
        applied = "default"
        if pretrained:
            if weights is None:
                raise WeightsError(f"pretrained torchvision backbone {name!r} needs model.pretrained_path "
                                   f"(a .pth file or a folder holding {name}.pth)")
            _load_file(model, weights, name)
        groups = [[f"body.{n}.{p}" for p, _ in child.named_parameters()]
                  for n, child in model.body.named_children() if any(True for _ in child.parameters())]
        return Backbone(name, model, groups, applied, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                        provenance.of_file(weights) if pretrained else provenance.RANDOM_INIT)

    # a DINO-style training checkpoint: the model is built empty and its backbone loaded below
    published = training_checkpoint_backbone(weights) if weights is not None else None
    kwargs = {}
    if pretrained and published is None:
        kwargs = {"pretrained": True}
        if weights is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        with _hub_offline(not allow_download):
            model, applied = _timm_model(name, activation, image_size, **kwargs)
        check_patch_size(name, model, image_size)
        if published is not None:
            _load_training_checkpoint(model, published, weights, name)
    except (WeightsError, BackboneError):
        raise
    except Exception as err:
        if not pretrained:
            raise BackboneError(f"backbone {name!r} could not be built: {type(err).__name__}: {err}") from err
        where = str(weights) if weights else f"the Hugging Face cache ({hub_cache()}, HF_HOME)"
        hint = "" if allow_download else "; set model.pretrained_path to a weights file, or model.allow_download: true"
        raise WeightsError(f"pretrained weights for backbone {name!r} could not be loaded from {where}: "
                           f"{type(err).__name__}: {err}{hint}") from None
    matcher = model.group_matcher(coarse=True)
    grouped = group_parameters(model, matcher)
    groups = [list(grouped[k]) for k in sorted(grouped)]
    cfg = timm.data.resolve_data_config({}, model=model)
    loaded = provenance.RANDOM_INIT if not pretrained else \
        provenance.of_file(weights) if weights is not None else provenance.of_hub(model.pretrained_cfg, name)
    return Backbone(name, model, groups, applied, cfg["mean"], cfg["std"], loaded)
