"""Decode + resize every image once into one uint8 array, shared by every trial.

One pass of parallel Ray tasks, on the nodes that can read the files
(``leuktune.data.placement``), examines each file (``leuktune.data.decode.examine``): pixels at
the experiment's size, an exact content hash, a perceptual hash, or the reason the file is bad.
The pass is saved on the driver's disk (``data.cache_dir``) keyed by the files (paths, sizes,
modification times, as the manifest lists them), the image size and the resize mode, so a
second run of an experiment decodes nothing. Trials receive the pixels through the Ray object
store (``CachedDataset.shared``), where the workers of one node share one read-only copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import ray

from leuktune import uris
from leuktune.data import placement
from leuktune.data.sites import SITE, names
from leuktune.data.split import SPLITS
from leuktune.runtime import ray_session


def files_key(manifest: pd.DataFrame, size: int, mode: str, stain: str | None = None) -> str:
    """Identifies the decoded pixels: the files as they were listed (path, size, modification
    time; a bucket's objects without credentials or endpoint options), the size and resize mode,
    and the stain normalisation (its method and reference)."""
    h = hashlib.sha256(f"{size}\0{mode}\n".encode() + (f"{stain}\n".encode() if stain else b""))
    for path, size_bytes, mtime in manifest[["path", "bytes", "mtime_ns"]].itertuples(index=False):
        h.update(f"{uris.identity(path)}\0{size_bytes}\0{mtime}\n".encode())
    return h.hexdigest()[:16]


def fingerprint(manifest: pd.DataFrame) -> str:
    """Identifies the data a result was computed on: paths, file sizes, labels, split."""
    h = hashlib.sha256()
    for row in manifest[["path", "bytes", "label", "split"]].itertuples(index=False):
        h.update(f"{uris.identity(row.path)}\0{row.bytes}\0{row.label}\0{row.split}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class Scan:
    """Every manifest row examined: ``pixels[i]`` is row i (zeros where ``error[i]`` is set)."""

    pixels: np.ndarray
    info: pd.DataFrame  # path, content_hash, phash, error

    @property
    def usable(self) -> np.ndarray:
        """The rows whose file could be used."""
        return self.info["error"].isna().to_numpy()

    def rejected(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """The scanned ``manifest``'s rows that could not be used: path, label, site (where the
        manifest has one), error."""
        bad = ~self.usable
        columns = [c for c in ("path", "label", SITE) if c in manifest]
        return manifest.loc[bad, columns].assign(error=self.info.loc[bad, "error"].to_numpy())


def scan(manifest: pd.DataFrame, size: int, mode: str, cache_dir: str | Path, progress=print,
         stain=None) -> Scan:
    cache_dir = Path(cache_dir)
    key = files_key(manifest, size, mode, stain.key if stain is not None else None)
    pixels_file, info_file = cache_dir / f"{key}-{size}px.npy", cache_dir / f"{key}-{size}px.parquet"
    if pixels_file.is_file() and info_file.is_file():
        pixels = np.load(pixels_file, mmap_mode="r")
        info = pd.read_parquet(info_file)
        same_files = info["path"].map(uris.identity).tolist() == manifest["path"].map(uris.identity).tolist()
        if pixels.shape == (len(manifest), size, size, 3) and same_files:
            progress(f"[leuktune] decoded images reused from {pixels_file}")
            return Scan(pixels, info)
    paths = manifest["path"].tolist()
    started = time.monotonic()
    with ray_session(echo=progress):  # the search's Ray (a cluster's nodes decode), else one for the pass
        decoded = placement.decode(paths, manifest["bytes"].tolist(), manifest["mtime_ns"].tolist(), size, mode,
                                   progress, stain)
    progress(f"[leuktune] decoded {len(paths)} images in {time.monotonic() - started:.1f}s: {decoded.summary()}")
    pixels, rows = decoded.pixels, decoded.results
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
    # data.stain_normalize's reference at the image size (None when off): the checkpoints keep
    # it, so a trained model normalises what it predicts on without the reference's file
    stain_reference: np.ndarray | None = None
    # (N,) int64 group (patient) ids, numbered in manifest order; None: every image its own group.
    # Validation's standard errors resample whole groups: cells of one patient move together.
    groups: np.ndarray | None = None
    # The data.stain_normalize method ``images`` were normalised with (None: not said, the one the
    # config names), and, where the search draws the method, each other method's pixels and
    # reference (decoded once each): ``for_stain`` picks a trial's.
    stain_method: str | None = None
    restained: Mapping[str, tuple["np.ndarray | ray.ObjectRef", "np.ndarray | None"]] = field(default_factory=dict)
    # The sites (labs) in their order (leuktune.data.sites.names) and each image's site, as an
    # index into them ((N,) int64); a dataset made without sites has one, unnamed: () and None.
    site_names: tuple[str, ...] = ()
    sites: np.ndarray | None = None

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
        """The same data with the pixels (each stain method's) put in the Ray object store once, for every trial."""
        return dataclasses.replace(self, images=_put(self.images),
                                   restained={m: (_put(images), ref) for m, (images, ref) in self.restained.items()})

    def for_stain(self, method: str) -> "CachedDataset":
        """The same data with the pixels normalised by ``method`` (a trial's data.stain_normalize);
        itself when it holds one method only."""
        if not self.restained or method == self.stain_method:
            return self
        others = {**self.restained, self.stain_method: (self.images, self.stain_reference)}
        if method not in others:
            raise ValueError(f"data.stain_normalize {method!r}: not decoded for this search (decoded: "
                             f"{', '.join(sorted(others))}); the trial's method must be one the search can draw")
        images, reference = others.pop(method)
        return dataclasses.replace(self, images=images, stain_reference=reference, stain_method=method,
                                   restained=others)


def _put(images: "np.ndarray | ray.ObjectRef") -> ray.ObjectRef:
    return images if isinstance(images, ray.ObjectRef) else ray.put(np.ascontiguousarray(images))


def dataset(manifest: pd.DataFrame, images: np.ndarray, class_names: tuple[str, ...],
            stain_reference: np.ndarray | None = None, stain_method: str | None = None,
            restained: Mapping[str, tuple[np.ndarray, np.ndarray | None]] | None = None) -> CachedDataset:
    """``manifest`` rows and ``images`` rows correspond; class ids follow ``class_names``;
    ``stain_reference``: the pixels the images' stain was normalised to by ``stain_method``, if it
    was; ``restained``: other methods' pixels and references, by method."""
    return CachedDataset(
        images=images,
        labels=manifest["label"].map({c: i for i, c in enumerate(class_names)}).to_numpy(np.int64),
        splits=manifest["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy(np.int8),
        class_names=class_names,
        fingerprint=fingerprint(manifest),
        stain_reference=stain_reference,
        groups=pd.factorize(manifest["group"])[0].astype(np.int64),
        stain_method=stain_method,
        restained=dict(restained or {}),
        site_names=tuple(names(manifest)),
        sites=(manifest[SITE].map({s: i for i, s in enumerate(names(manifest))}).to_numpy(np.int64)
               if SITE in manifest else None),
    )
