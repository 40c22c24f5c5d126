"""A frozen backbone's features, computed once and shared by every trial that needs them.

A trial whose backbone is frozen (``unfreeze_depth: 0``, and every probe head) would otherwise
run the whole backbone over every image in every epoch, although its output never changes: a
search of 20 heads over one frozen backbone paid 20 x epochs backbone passes. Here the first
trial that needs a backbone's features computes them, on its device, for the training and
validation images, and writes them to the node's cache (``<data.cache_dir>/features``); trials
that need the same features at once wait on a file lock for that one computation, and every
trial memory-maps the file, so a node's trials share one copy in its page cache, as they share
one copy of the decoded images in the object store. The trial then trains its head only.

The key is everything the features depend on: the backbone (name, activation, and a hash of its
weights as built: the weights file, or the seed of a random init), the data (fingerprint, which
rows, image size, stain reference), the views, pooled or tokens, and the precision they were
computed in. Another weights file, image size or data makes another key.

Views: a white cell has no up or down, so the eight flips and quarter turns of an image (the
symmetries of the square, what ``train.augment.flip`` draws from) are label-preserving; the
features of all eight are cached for each image and a frozen trial draws one per sample per
epoch. Augmentations that need pixels (rotate by other angles, zoom, shear, colour, stain) are
not applied to such a trial: it says so in one line when it starts (``model.feature_cache: off``
keeps them, running the backbone every epoch).

Memory: the features are float16; a key's file is bounded by ``model.feature_cache_gb``: past it
fewer views are cached (4, 2, then 1), and past one view none (the backbone runs every epoch as
before; a probe, which needs the features, is refused with the figures).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.errors import LeuktuneError
from leuktune.models.classifier import Classifier
from leuktune.runfolder import RunFolder
from leuktune.train.device import BatchSource, DeviceSetup

# (quarter turns, mirrored) of each view, in the order fewer views are kept: the image, its
# mirror, then the quarter turns (a prefix of 4 holds the half turn and two mirrors as well).
VIEWS = ((0, False), (0, True), (1, False), (1, True), (2, False), (2, True), (3, False), (3, True))
FORMAT = 1  # bump when what a cached file holds changes: old files are then not read


class FeatureCacheError(LeuktuneError, RuntimeError):
    """Features a trial needs that cannot be cached (a probe past model.feature_cache_gb)."""


def oriented(x: torch.Tensor, view: int) -> torch.Tensor:
    """``x`` (N, C, H, W) turned and mirrored as ``VIEWS[view]`` says."""
    turns, mirrored = VIEWS[view]
    x = torch.rot90(x, turns, dims=(-2, -1)) if turns else x
    return x.flip(-1) if mirrored else x


@dataclass(frozen=True)
class FeaturePlan:
    """What a frozen trial caches: ``views`` per image, pooled vectors or the backbone's tokens
    (``shape`` per view), for ``rows`` of the data (training and validation)."""

    rows: np.ndarray
    views: int
    tokens: bool
    shape: tuple[int, ...]
    folder: Path | None  # None: kept in the trial's memory only (model.feature_cache off)

    @property
    def bytes(self) -> int:
        return len(self.rows) * self.views * int(np.prod(self.shape)) * 2


def pixel_augmentations(cfg: ExperimentConfig) -> list[str]:
    """The augmentations of ``train.augment`` that need pixels: what cached features leave out."""
    augment, strength = cfg.train.augment, cfg.train.augment_strength
    if not strength:
        return []
    named = {"rotate": augment.rotate, "zoom": augment.zoom, "shear": augment.shear, "color": augment.color,
             "stain": augment.stain}
    return [f"{name} {value:g}" for name, value in named.items() if value]


def plan(cfg: ExperimentConfig, network: Classifier, data: CachedDataset, setup: DeviceSetup,
         echo: Callable[[str], None] = print) -> FeaturePlan | None:
    """The features a trial caches, or None when it runs its backbone every epoch (it trains
    some of it, the cache is off, or its features pass the bound); says which in one line."""
    model, head = cfg.model, network.head
    if network.unfreeze_depth != 0 or (model.feature_cache == "off" and not head.fitted):
        return None
    rows = np.flatnonzero(data.splits != 2)  # training and validation (test: only the final evaluation reads it)
    size = cfg.data.image_size
    with torch.no_grad(), setup.autocast():
        probe = network.backbone(torch.zeros(1, 3, size, size, device=setup.device))
    tokens = head.needs_spatial
    shape = tuple(probe.shape[1:]) if tokens else (network.backbone.num_features,)
    # train.augment.flip draws the same eight views (a kNN probe's bank holds the images as they are)
    flips = cfg.train.augment.flip and getattr(head, "uses_views", True)
    bound = model.feature_cache_gb * 1e9
    folder = None if model.feature_cache == "off" else RunFolder.of(cfg).cache / "features"
    for views in ((8, 4, 2, 1) if flips else (1,)):
        candidate = FeaturePlan(rows, views, tokens, shape, folder)
        if candidate.bytes <= bound:
            break
    else:
        message = (f"the frozen backbone's {'tokens' if tokens else 'features'} of {len(rows)} images "
                   f"({candidate.bytes / 1e9:.1f} GB for one view) pass model.feature_cache_gb "
                   f"{model.feature_cache_gb:g}")
        if head.fitted:
            raise FeatureCacheError(f"head {model.head!r} needs them: {message}; raise the bound")
        echo(f"[leuktune] {message}: the backbone runs every epoch instead")
        return None
    left_out = pixel_augmentations(cfg) if not head.fitted else []
    echo(f"[leuktune] frozen backbone: {candidate.views} view(s) of {len(rows)} images "
         f"({candidate.bytes / 1e6:.0f} MB) computed once and shared "
         + (f"in {folder}" if folder else "within this trial")
         + (f"; {', '.join(left_out)} need pixels and are not applied (model.feature_cache: off keeps them)"
            if left_out else ""))
    return candidate


def key(plan_: FeaturePlan, network: Classifier, data: CachedDataset, setup: DeviceSetup) -> str:
    """Names the features: what they are computed from and how (see the module's docstring)."""
    backbone = network.backbone
    h = hashlib.sha256(json.dumps({
        "format": FORMAT, "backbone": backbone.name, "activation": backbone.activation, "views": plan_.views,
        "tokens": plan_.tokens, "shape": plan_.shape, "precision": setup.precision,
        "fingerprint": data.fingerprint, "images": list(np.shape(data.pixels())),
        "mean": backbone.mean, "std": backbone.std}).encode())
    h.update(plan_.rows.astype(np.int64).tobytes())
    if data.stain_reference is not None:
        h.update(np.ascontiguousarray(data.stain_reference).tobytes())
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def compute(plan_: FeaturePlan, network: Classifier, images: np.ndarray, setup: DeviceSetup,
            batch_size: int) -> np.ndarray:
    """(rows, views, *shape) float16: the backbone (in eval mode) over every view of every row."""
    backbone = network.backbone
    was_training = backbone.training
    backbone.eval()
    out = np.empty((len(plan_.rows), plan_.views, *plan_.shape), np.float16)
    try:
        for start in range(0, len(plan_.rows), batch_size):
            rows = plan_.rows[start:start + batch_size]
            x = setup.model_input(setup.to_unit(torch.from_numpy(np.ascontiguousarray(images[rows]))))
            for view in range(plan_.views):
                with setup.autocast():
                    features = backbone(oriented(x, view))
                    if not plan_.tokens:
                        features = backbone.pool(features)
                out[start:start + len(rows), view] = features.float().cpu().numpy()
    finally:
        backbone.train(was_training)
    return out


@contextlib.contextmanager
def _locked(path: Path):
    """One process at a time per key on this machine (released if the process dies)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared(plan_: FeaturePlan, name: str, computation: Callable[[], np.ndarray],
           echo: Callable[[str], None] = print) -> tuple[np.ndarray, str]:
    """(the features, "computed" or "loaded"): read from the node's cache when there, else
    computed by this trial while the trials that need them too wait, then written for them."""
    if plan_.folder is None:
        return computation(), "computed"
    try:
        plan_.folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        echo(f"[leuktune] features not shared: {plan_.folder} cannot be written ({err}); computed for this trial")
        return computation(), "computed"
    path = plan_.folder / f"{name}.npy"
    with _locked(plan_.folder / f"{name}.lock"):
        if not path.is_file():
            started = time.perf_counter()
            features = computation()
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, features)
            os.replace(tmp, path)  # a reader never sees half a file
            echo(f"[leuktune] features computed in {time.perf_counter() - started:.1f}s: {path}")
            return np.load(path, mmap_mode="r"), "computed"
    return np.load(path, mmap_mode="r"), "loaded"


class FeatureSource:
    """Batches of a frozen trial's cached features by data row, as ``BatchSource`` gives images:
    ``__call__(batches)`` yields (features (B, views, *shape) float16, labels) on the device."""

    def __init__(self, features: np.ndarray, rows: np.ndarray, labels: np.ndarray, device: torch.device,
                 resident: bool):
        # features row i is data row rows[i]
        self.position = np.full(len(labels), -1, np.int64)
        self.position[rows] = np.arange(len(rows))
        self.batches = BatchSource(features, labels[rows], device, resident=resident)
        self.views = features.shape[1]

    def __call__(self, batches: list[np.ndarray]):
        return self.batches([self.position[rows] for rows in batches])


def training_view(features: torch.Tensor) -> torch.Tensor:
    """One view per sample, drawn (the trial's torch seed): (B, views, *shape) -> (B, *shape) float."""
    pick = torch.randint(features.shape[1], (features.shape[0],), device=features.device)
    return features[torch.arange(features.shape[0], device=features.device), pick].float()


def plain_view(features: torch.Tensor) -> torch.Tensor:
    """The image as it is (view 0), for validation and fitting."""
    return features[:, 0].float()
