"""Decode + resize every image once per experiment into one uint8 array.

Trials never touch image files: the array is built by parallel Ray tasks, saved under
``<storage>/cache/`` keyed by the data fingerprint and image size (so a second run of
an experiment decodes nothing), and handed to every trial through the Ray object
store, where the workers of one node share a single read-only copy.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from PIL import Image, ImageOps

from leuktune.data.split import SPLITS

_CHUNK = 256  # images per decode task: large enough to amortise task overhead


def fingerprint(manifest: pd.DataFrame) -> str:
    """Identifies the data a result was computed on: paths, file sizes, labels, split."""
    h = hashlib.sha256()
    for row in manifest[["path", "label", "split"]].itertuples(index=False):
        h.update(f"{row.path}\0{os.path.getsize(row.path)}\0{row.label}\0{row.split}\n".encode())
    return h.hexdigest()[:16]


def decode(path: str, size: int) -> np.ndarray:
    """RGB uint8 ``size x size``, aspect kept by padding with the image's mean colour."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        fill = tuple(int(c) for c in np.asarray(img).reshape(-1, 3).mean(axis=0))
        return np.asarray(ImageOps.pad(img, (size, size), method=Image.BILINEAR, color=fill))


@ray.remote(num_cpus=1)
def _decode_chunk(paths: list[str], size: int) -> np.ndarray:
    return np.stack([decode(p, size) for p in paths])


def build(manifest: pd.DataFrame, size: int, cache_dir: str | Path, key: str) -> np.ndarray:
    """The (N, size, size, 3) uint8 array for ``manifest`` rows, from disk cache if present."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{key}-{size}px.npy"
    if target.is_file():
        images = np.load(target, mmap_mode="r")
        if images.shape == (len(manifest), size, size, 3):
            return images
    paths = manifest["path"].tolist()
    chunks = [_decode_chunk.remote(paths[i:i + _CHUNK], size) for i in range(0, len(paths), _CHUNK)]
    images = np.concatenate(ray.get(chunks)) if chunks else np.zeros((0, size, size, 3), np.uint8)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, images)
    os.replace(tmp, target)  # readers never see a half-written cache
    return images


@dataclass(frozen=True)
class CachedDataset:
    """What a trial needs of the data: a reference to the shared pixels plus small arrays."""

    images: "ray.ObjectRef"  # (N, H, W, 3) uint8 in the object store
    labels: np.ndarray  # (N,) int64 class ids
    splits: np.ndarray  # (N,) int8 index into SPLITS
    class_names: tuple[str, ...]
    fingerprint: str

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == SPLITS.index(split))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def share(manifest: pd.DataFrame, images: np.ndarray, key: str) -> CachedDataset:
    class_names = tuple(sorted(manifest["label"].unique()))
    return CachedDataset(
        images=ray.put(np.ascontiguousarray(images)),
        labels=manifest["label"].map({c: i for i, c in enumerate(class_names)}).to_numpy(np.int64),
        splits=manifest["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy(np.int8),
        class_names=class_names,
        fingerprint=key,
    )
