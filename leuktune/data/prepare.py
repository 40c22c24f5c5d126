"""The data side of a run, in flow order: manifest -> split -> decode-once cache -> shared.

The split is saved next to the run (``split.parquet``) and reused when the run is
started again on the same files, so a resumed search never reshuffles its test set.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leuktune.config import ExperimentConfig
from leuktune.data import cache, sources
from leuktune.data.cache import CachedDataset
from leuktune.data.split import assign_splits


def split_manifest(cfg: ExperimentConfig) -> pd.DataFrame:
    """The manifest with its ``split`` column, reusing the run's saved split when it fits."""
    manifest = sources.manifest(cfg.data, cfg.storage.path)
    saved_file = Path(cfg.run_dir) / "split.parquet"
    if saved_file.is_file():
        saved = pd.read_parquet(saved_file)
        same_files = (len(saved) == len(manifest)
                      and saved[["path", "label"]].equals(manifest[["path", "label"]]))
        if same_files:
            return saved
    split = assign_splits(manifest, cfg.data.split)
    saved_file.parent.mkdir(parents=True, exist_ok=True)
    split.to_parquet(saved_file, index=False)
    return split


def prepare(cfg: ExperimentConfig) -> CachedDataset:
    manifest = split_manifest(cfg)
    key = cache.fingerprint(manifest)
    images = cache.build(manifest, cfg.data.image_size, Path(cfg.storage.path) / "cache", key)
    return cache.share(manifest, images, key)
