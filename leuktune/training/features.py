"""A frozen backbone's features, computed once and shared by every trial that needs them.

A trial whose backbone is frozen (``unfreeze_depth: 0``, and every probe head) would otherwise
run the whole backbone over every image in every epoch, although its output never changes: a
search of 20 heads over one frozen backbone paid 20 x epochs backbone passes. Here the trials
that need a backbone's features compute them, on their devices, for the training and validation
images, and write them to the node's cache (``<data.cache_dir>/features/<key>/view<v>.npy``);
each view is computed once: a trial computes the views that nobody has yet, and waits (a file
lock per view) for those that trials beside it are computing, so trials that start together
divide the work rather than idle. Every trial memory-maps the files, so a node's trials share
one copy in its page cache, as they share one copy of the decoded images in the object store.
The trial then trains its head only.

The key is everything the features depend on: the backbone (name, activation, and a hash of its
weights as built: the weights file, or the seed of a random init), the data (fingerprint, which
rows, image size, stain reference), pooled or tokens, and the precision they were computed in.
Another weights file, image size or data makes another key.

Views: a white cell has no up or down, so the eight flips and quarter turns of an image (the
symmetries of the square, what ``train.augment.flip`` draws from) are label-preserving; the
features of all eight are cached for each image and a frozen trial draws one per sample per
epoch. Augmentations that need pixels (rotate by other angles, zoom, shear, colour, stain) are
not applied to such a trial: it says so in one line when it starts (``model.feature_cache: off``
keeps them, running the backbone every epoch).

Memory: the features are float16; what one trial reads is bounded by ``model.feature_cache_gb``:
past it fewer views are used (4, 2, then 1), and past one view none (the backbone runs every
epoch as before; a probe, which needs the features, is refused with the figures).
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
from typing import Callable, Iterator

import numpy as np
import torch

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.data.split import SPLITS
from leuktune.errors import LeuktuneError
from leuktune.models.classifier import Classifier
from leuktune.runfolder import RunFolder
from leuktune.training.device import BatchSource, DeviceSetup

# (quarter turns, mirrored) of each view, in the order fewer views are kept: the image, its
# mirror, then the quarter turns (a prefix of 4 holds the half turn and two mirrors as well).
VIEWS = ((0, False), (0, True), (1, False), (1, True), (2, False), (2, True), (3, False), (3, True))
DTYPE = np.float16  # what the cached features are kept as: half the bytes, ample for features
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
        return len(self.rows) * self.views * int(np.prod(self.shape)) * np.dtype(DTYPE).itemsize


def pixel_augmentations(cfg: ExperimentConfig) -> list[str]:
    """The augmentations (``train.augment`` and the levers) that need pixels: what cached features leave out."""
    train = cfg.train
    augment, colour = train.augment, train.color_strength
    named = {"rotate": augment.rotate, "zoom": augment.zoom, "shear": augment.shear, "color": augment.color * colour,
             "stain": augment.stain * colour} if train.augment_strength else {}
    named.update({"scale_augment": train.scale_augment if train.scale_augment > 1 else 0,
                  "grayscale": train.grayscale, "blur": train.blur})
    return [f"{name} {value:g}" for name, value in named.items() if value]


def plan(cfg: ExperimentConfig, network: Classifier, data: CachedDataset, setup: DeviceSetup,
         echo: Callable[[str], None] = print) -> FeaturePlan | None:
    """The features a trial caches, or None when it runs its backbone every epoch (it trains
    some of it, the cache is off, or its features pass the bound); says which in one line."""
    model, head = cfg.model, network.head
    if network.unfreeze_depth != 0 or (model.feature_cache == "off" and not head.fitted):
        return None
    # training and validation rows (the test split is read by the final evaluation only, with the whole model)
    rows = np.flatnonzero(data.splits != SPLITS.index("test"))
    tokens = head.needs_spatial
    shape = _token_shape(network, cfg.data.image_size, setup) if tokens else (network.backbone.num_features,)
    # train.augment.flip draws the same eight views (a kNN probe's bank holds the images as they are)
    flips = cfg.train.augment.flip and getattr(head, "uses_views", True)
    bound = model.feature_cache_gb * 1e9
    folder = None if model.feature_cache == "off" else RunFolder.of(cfg).features
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


@torch.no_grad()
def _token_shape(network: Classifier, size: int, setup: DeviceSetup) -> tuple[int, ...]:
    """The shape of one image's un-pooled features: (C, H, W) of a CNN, (tokens, C) of a ViT."""
    with setup.autocast():
        return tuple(network.backbone(torch.zeros(1, 3, size, size, device=setup.device)).shape[1:])


def key(plan_: FeaturePlan, network: Classifier, data: CachedDataset, setup: DeviceSetup) -> str:
    """Names the features: what they are computed from and how (see the module's docstring). The
    views are not in it: each view is its own part, so a trial that needs one view reads the
    first part of those that need eight."""
    backbone = network.backbone
    h = hashlib.sha256(json.dumps({
        "format": FORMAT, "backbone": backbone.name, "activation": backbone.activation,
        "tokens": plan_.tokens, "shape": plan_.shape, "precision": setup.precision,
        "fingerprint": data.fingerprint, "images": list(np.shape(data.pixels())),
        "mean": backbone.mean, "std": backbone.std}).encode())
    h.update(plan_.rows.astype(np.int64).tobytes())
    if data.stain_reference is not None:  # the method too: reinhard and macenko may share a reference
        h.update(np.ascontiguousarray(data.stain_reference).tobytes())
        h.update((data.stain_method or "").encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def compute(plan_: FeaturePlan, network: Classifier, images: np.ndarray, setup: DeviceSetup, batch_size: int,
            view: int) -> np.ndarray:
    """(rows, *shape) of DTYPE: the backbone (in eval mode) over one view of every row."""
    backbone = network.backbone
    was_training = backbone.training
    backbone.eval()
    out = np.empty((len(plan_.rows), *plan_.shape), DTYPE)
    try:
        for start in range(0, len(plan_.rows), batch_size):
            rows = plan_.rows[start:start + batch_size]
            x = setup.model_input(setup.to_unit(torch.from_numpy(np.ascontiguousarray(images[rows]))))
            with setup.autocast():
                features = backbone(oriented(x, view))
                if not plan_.tokens:
                    features = backbone.pool(features)
            out[start:start + len(rows)] = features.float().cpu().numpy()
    finally:
        backbone.train(was_training)
    return out


@contextlib.contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Whether this process holds the lock of ``path`` on this machine for the block (``wait``:
    until it is free). The system releases it if the process dies."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Shared:
    """A trial's features: one read-only array per view, (rows, *shape) each, and how many of
    the views this trial computed (the others were cached, or computed by trials beside it)."""

    views: list[np.ndarray]
    computed: int

    @property
    def how(self) -> str:
        return "computed" if self.computed else "loaded"


def shared(plan_: FeaturePlan, name: str, compute_view: Callable[[int], np.ndarray],
           echo: Callable[[str], None] = print) -> Shared:
    """The plan's views from the node's cache, each computed once: a trial computes the views
    that are neither cached nor being computed, then waits for the ones trials beside it are
    computing (their locks), so trials that start together share the work instead of idling
    (a view whose trial died is computed by the next that needs it)."""
    def in_memory() -> Shared:  # every view computed by this trial, for this trial
        return Shared([compute_view(v) for v in range(plan_.views)], plan_.views)

    if plan_.folder is None:
        return in_memory()
    folder = plan_.folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        echo(f"[leuktune] features not shared: {plan_.folder} cannot be written ({err}); computed for this trial")
        return in_memory()
    started, computed = time.perf_counter(), 0
    for wait in (False, True):  # first the views nobody holds, then the ones others were computing
        for view in range(plan_.views):
            part = folder / f"view{view}.npy"
            if part.is_file():
                continue
            with _locked(folder / f"view{view}.lock", wait=wait) as held:
                if held and not part.is_file():
                    tmp = part.with_suffix(f".tmp{os.getpid()}.npy")
                    np.save(tmp, compute_view(view))
                    os.replace(tmp, part)  # a reader never sees half a file
                    computed += 1
    if computed:
        echo(f"[leuktune] {computed} of {plan_.views} view(s) computed in {time.perf_counter() - started:.1f}s: "
             f"{folder}")
    return Shared([np.load(folder / f"view{v}.npy", mmap_mode="r") for v in range(plan_.views)], computed)


class ViewStack:
    """Per-view feature arrays read as one (rows, views, *shape) array: rows gathered from each
    view's memory-mapped file, so the node's page cache holds one copy of each."""

    def __init__(self, views: list[np.ndarray]):
        self.views = views
        self.shape = (len(views[0]), len(views), *views[0].shape[1:])
        self.nbytes = sum(v.nbytes for v in views)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([view[rows] for view in self.views], axis=1)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.stack(self.views, axis=1)  # a device copy of the whole set (BatchSource's resident)
        return whole if dtype is None else whole.astype(dtype)


class FeatureSource:
    """Batches of a frozen trial's cached features by data row, as ``BatchSource`` gives images:
    ``__call__(batches)`` yields (features (B, views, *shape) float16, labels) on the device."""

    def __init__(self, features: ViewStack, rows: np.ndarray, labels: np.ndarray, device: torch.device,
                 resident: bool):
        # features row i is data row rows[i]
        self.position = np.full(len(labels), -1, np.int64)
        self.position[rows] = np.arange(len(rows))
        self.batches = BatchSource(features, labels[rows], device, resident=resident)

    def __call__(self, batches: list[np.ndarray]):
        return self.batches([self.position[rows] for rows in batches])


def training_view(features: torch.Tensor) -> torch.Tensor:
    """One view per sample, drawn (the trial's torch seed): (B, views, *shape) -> (B, *shape) float."""
    pick = torch.randint(features.shape[1], (features.shape[0],), device=features.device)
    return features[torch.arange(features.shape[0], device=features.device), pick].float()


def plain_view(features: torch.Tensor) -> torch.Tensor:
    """The image as it is (view 0), for validation and fitting."""
    return features[:, 0].float()
