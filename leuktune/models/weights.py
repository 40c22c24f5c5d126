"""Are the pretrained weights of every backbone a search may draw on this machine? Asked before
Ray starts, so that a missing file stops the run in a second with how to get it, rather than
every trial failing inside Ray."""

from __future__ import annotations

from pathlib import Path

from leuktune.config import TORCHVISION_BACKBONES, ConfigError, ExperimentConfig, representatives
from leuktune.models.backbones import WeightsError, find_weights_file, hub_cache

# Where torchvision publishes the ImageNet weights of the two architectures timm lacks.
TORCHVISION_WEIGHTS = {"alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                       "googlenet": "https://download.pytorch.org/models/googlenet-1378be20.pth"}

# The DINOv2 ViT/14s have two kinds of published weights that fit them alike: DINOv2's general ones
# (timm's Hub pages) and DinoBloom's (Koch et al., MICCAI 2024: the same networks trained further on
# blood and bone-marrow cells), each size under its letter. The file in model.pretrained_path decides.
DINOBLOOM_SIZES = {"vit_small_patch14_dinov2": ("S", "small"), "vit_base_patch14_dinov2": ("B", "base"),
                   "vit_large_patch14_dinov2": ("L", "large"), "vit_giant_patch14_dinov2": ("G", "giant")}
DINOBLOOM_RELEASE = "https://zenodo.org/records/10908163/files"  # MarrLab's (github.com/marrlab/DinoBloom)


def _hub_id(name: str) -> str | None:
    # timm's pretrained registry only when pretrained weights are looked for
    import timm

    if name.startswith("hf-hub:"):
        return name.removeprefix("hf-hub:")
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.hf_hub_id if cfg is not None else None


def locate(name: str, pretrained_path: Path | None) -> str | None:
    """The weights file a backbone would load, or None: ``model.pretrained_path`` (a file, or
    ``<folder>/<backbone>.<ext>``), else the Hugging Face cache."""
    if pretrained_path is not None:
        try:
            return str(find_weights_file(name, pretrained_path))
        except WeightsError:
            return None
    hub = None if name in TORCHVISION_BACKBONES else _hub_id(name)
    if hub is None:
        return None
    # huggingface_hub only when pretrained weights are looked for
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(hub, filename)
        if isinstance(found, str):
            return found
    return None


def source(name: str) -> tuple[str, str] | None:
    """(where to download a backbone's weights, the file name ``model.pretrained_path`` expects),
    or None when no pretrained weights are published for it."""
    if name in TORCHVISION_BACKBONES:
        return TORCHVISION_WEIGHTS[name], f"{name}.pth"
    hub = _hub_id(name)
    return (f"https://huggingface.co/{hub}/resolve/main/model.safetensors", f"{name}.safetensors") if hub else None


def dinov2_choices(name: str) -> str | None:
    """For a DINOv2 ViT/14, the two weights it may load, each with where to get it and the file
    name leuktune looks for; None for any other backbone.

    >>> print(dinov2_choices("vit_small_patch14_dinov2"))  # doctest: +NORMALIZE_WHITESPACE
    vit_small_patch14_dinov2 takes two kinds of weights, and loads the file you put there: DINOv2's general
    ones (https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/model.safetensors -> save
    as vit_small_patch14_dinov2.safetensors), or DinoBloom-S's hematology ones (MarrLab's release
    https://zenodo.org/records/10908163/files/DinoBloom-S.pth -> save as vit_small_patch14_dinov2.pth, its
    training checkpoint as published; or timm's conversion
    https://huggingface.co/1aurent/vit_small_patch14_224.dinobloom/resolve/main/model.safetensors -> save as
    vit_small_patch14_dinov2.safetensors)
    """
    base = name.split(".")[0]
    if base not in DINOBLOOM_SIZES:
        return None
    letter, size = DINOBLOOM_SIZES[base]
    return (f"{base} takes two kinds of weights, and loads the file you put there: DINOv2's general ones "
            f"(https://huggingface.co/timm/{base}.lvd142m/resolve/main/model.safetensors -> save as "
            f"{base}.safetensors), or DinoBloom-{letter}'s hematology ones (MarrLab's release "
            f"{DINOBLOOM_RELEASE}/DinoBloom-{letter}.pth -> save as {base}.pth, its training checkpoint as "
            f"published; or timm's conversion https://huggingface.co/1aurent/vit_{size}_patch14_224.dinobloom/"
            f"resolve/main/model.safetensors -> save as {base}.safetensors)")


def missing(cfg: ExperimentConfig) -> list[str]:
    """The backbones the search may draw whose pretrained weights are not on this machine (none
    when model.pretrained is false or downloads are allowed)."""
    model = cfg.model
    if not model.pretrained or model.allow_download:
        return []
    return [name for name in representatives(model.backbone) if locate(name, model.pretrained_path) is None]


def check(cfg: ExperimentConfig) -> None:
    """A ConfigError naming each backbone without weights and how to get them."""
    absent = missing(cfg)
    if not absent:
        return
    where = cfg.model.pretrained_path or hub_cache()
    choices = [text for text in map(dinov2_choices, absent) if text]
    sources = {name: source(name) for name in absent if not dinov2_choices(name)}
    unpublished = [name for name, found in sources.items() if found is None]
    files = "; ".join([*choices, *(f"{url} -> {file}" for url, file in filter(None, sources.values()))])
    # the cache holds DINOv2's general weights only: no hint that would pass them off as DinoBloom's
    hub = [name for name, found in sources.items() if found and name not in TORCHVISION_BACKBONES]
    fill = (f" (on a machine with internet access, python -c \"import timm; [timm.create_model(n, pretrained=True) "
            f"for n in {hub}]\" fills the Hugging Face cache, which can be copied here)") if hub else ""
    raise ConfigError(
        f"model.pretrained is true, but the pretrained weights of {', '.join(absent)} are not on this machine "
        f"(looked in {where}). Download each into one folder and set model.pretrained_path to it: {files}{fill}. "
        + (f"timm publishes no pretrained weights for {', '.join(unpublished)}. " if unpublished else "")
        + "Or set model.allow_download: true (each trial downloads), or model.pretrained: false (train from scratch).")
