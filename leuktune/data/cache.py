"""Decode + resize every image once into one uint8 array, shared by every trial.

One pass of parallel Ray tasks examines each file (``leuktune.data.decode.examine``):
pixels at the experiment's size, an exact content hash, a perceptual hash, or the
reason the file is bad. The pass is saved under ``<storage>/cache/`` keyed by the
files (paths, sizes, modification times), the image size and the resize mode, so a
second run of an experiment decodes nothing. Trials receive the pixels through the Ray
object store (``CachedDataset.shared``), where the workers of one node share one read-only copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from leuktune.data.decode import examine
from leuktune.data.split import SPLITS
from leuktune.runtime import ray_session

_CHUNK = 64  # images per decode task: large enough to amortise task overhead, small enough to spread


def files_key(manifest: pd.DataFrame, size: int, mode: str) -> str:
    """Identifies the decoded pixels: the files as they are on disk, the size and resize mode."""
    h = hashlib.sha256(f"{size}\0{mode}\n".encode())
    for path in manifest["path"]:
        stat = os.stat(path)
        h.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def fingerprint(manifest: pd.DataFrame) -> str:
    """Identifies the data a result was computed on: paths, file sizes, labels, split."""
    h = hashlib.sha256()
    for row in manifest[["path", "label", "split"]].itertuples(index=False):
        h.update(f"{row.path}\0{os.path.getsize(row.path)}\0{row.label}\0{row.split}\n".encode())
    return h.hexdigest()[:16]


@ray.remote(num_cpus=1)
def _examine_chunk(paths: list[str], size: int, mode: str):
    results = [examine(p, size, mode) for p in paths]
    pixels = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, (px, *_rest) in enumerate(results):
        if px is not None:
            pixels[i] = px
    return pixels, [r[1:] for r in results]


@dataclass
class Scan:
    """Every manifest row examined: ``pixels[i]`` is row i (zeros where ``error[i]`` is set)."""

    pixels: np.ndarray
    info: pd.DataFrame  # path, content_hash, phash, error


def scan(manifest: pd.DataFrame, size: int, mode: str, cache_dir: str | Path, progress=print) -> Scan:
    cache_dir = Path(cache_dir)
    key = files_key(manifest, size, mode)
    pixels_file, info_file = cache_dir / f"{key}-{size}px.npy", cache_dir / f"{key}-{size}px.parquet"
    if pixels_file.is_file() and info_file.is_file():
        pixels = np.load(pixels_file, mmap_mode="r")
        info = pd.read_parquet(info_file)
        if pixels.shape == (len(manifest), size, size, 3) and info["path"].tolist() == manifest["path"].tolist():
            progress(f"[leuktune] decoded images reused from {pixels_file}")
            return Scan(pixels, info)
    paths = manifest["path"].tolist()
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    parts: dict[int, tuple] = {}
    with ray_session():  # the search's Ray (a cluster's cores decode), else a local one for the pass
        pending = {_examine_chunk.remote(c, size, mode): i for i, c in enumerate(chunks)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            parts[pending.pop(done[0])] = ray.get(done[0])
            if len(parts) % max(1, len(chunks) // 10) == 0 or not pending:
                progress(f"[leuktune] decoding images: {min(len(parts) * _CHUNK, len(paths))}/{len(paths)}")
    ordered = [parts[i] for i in range(len(chunks))]
    pixels = (np.concatenate([p for p, _ in ordered]) if ordered else np.zeros((0, size, size, 3), np.uint8))
    rows = [r for _, rs in ordered for r in rs]
    info = pd.DataFrame({
        "path": paths,
        "content_hash": [r[0] for r in rows],
        # Stored as text: a 64-bit perceptual hash does not fit Parquet's signed int64.
        "phash": [None if r[1] is None else f"{r[1]:016x}" for r in rows],
        "error": [r[2] for r in rows],
    })
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = pixels_file.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, pixels)
    info.to_parquet(info_file, index=False)
    os.replace(tmp, pixels_file)  # readers never see a half-written cache; the pixels land last
    return Scan(pixels, info)


@dataclass(frozen=True)
class CachedDataset:
    """What a trial needs of the data: the decoded pixels plus small arrays.

    ``images`` is the (N, H, W, 3) uint8 array itself, or, once ``shared``, a reference to
    it in the Ray object store, where the workers of one node read a single copy."""

    images: "np.ndarray | ray.ObjectRef"
    labels: np.ndarray  # (N,) int64 class ids
    splits: np.ndarray  # (N,) int8 index into SPLITS
    class_names: tuple[str, ...]
    fingerprint: str

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.splits == SPLITS.index(split))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def pixels(self) -> np.ndarray:
        """The decoded images (a zero-copy view of the node's shared copy when shared)."""
        return ray.get(self.images) if isinstance(self.images, ray.ObjectRef) else self.images

    def shared(self) -> "CachedDataset":
        """The same data with the pixels put in the Ray object store once, for every trial."""
        if isinstance(self.images, ray.ObjectRef):
            return self
        return dataclasses.replace(self, images=ray.put(np.ascontiguousarray(self.images)))


def dataset(manifest: pd.DataFrame, images: np.ndarray, class_names: tuple[str, ...]) -> CachedDataset:
    """``manifest`` rows and ``images`` rows correspond; class ids follow ``class_names``."""
    return CachedDataset(
        images=images,
        labels=manifest["label"].map({c: i for i, c in enumerate(class_names)}).to_numpy(np.int64),
        splits=manifest["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy(np.int8),
        class_names=class_names,
        fingerprint=fingerprint(manifest),
    )
