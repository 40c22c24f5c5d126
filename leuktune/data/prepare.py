"""The data side of a run, in flow order:

manifest -> examine every file once (cached) -> bad files stop the run or go to
``rejected.parquet`` -> identical images join one group -> group-disjoint split (saved
as ``split.parquet`` and reused on resume) -> near-duplicates across splits reported ->
pixels shared through the Ray object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from leuktune.config import ExperimentConfig
from leuktune.data import cache, sources
from leuktune.data.cache import CachedDataset
from leuktune.data.sources import DataError
from leuktune.data.split import SPLITS, assign_splits

REJECTED = "rejected.parquet"
SPLIT = "split.parquet"
NEAR_DUPLICATES = "near_duplicates.parquet"


@dataclass
class DataReport:
    """What a researcher should know about the data before trusting a result."""

    counts: pd.DataFrame  # images per class (rows) and split (columns)
    groups: int
    rejected: pd.DataFrame  # path, label, error
    duplicate_images: int  # images whose exact pixels occur more than once
    near_duplicates: pd.DataFrame  # path_a, split_a, path_b, split_b, distance
    straddling_groups: list[str] = field(default_factory=list)  # only possible in predefined splits

    def lines(self) -> list[str]:
        out = [f"{int(self.counts.values.sum())} images, {len(self.counts)} classes, {self.groups} groups",
               self.counts.to_string()]
        if len(self.rejected):
            out.append(f"{len(self.rejected)} bad file(s) left out (listed in {REJECTED})")
        if self.duplicate_images:
            out.append(f"{self.duplicate_images} images are exact duplicates of another; each set kept in one split")
        if self.straddling_groups:
            out.append(f"WARNING: the dataset's own split puts {len(self.straddling_groups)} group(s) in two "
                       f"splits, e.g. {self.straddling_groups[:3]}: its test scores are inflated")
        if len(self.near_duplicates):
            out.append(f"WARNING: {len(self.near_duplicates)} near-duplicate image pair(s) across splits "
                       f"(listed in {NEAR_DUPLICATES}), e.g.:")
            out += [f"  {r.path_a} ({r.split_a}) ~ {r.path_b} ({r.split_b}), distance {r.distance}"
                    for r in self.near_duplicates.head(10).itertuples()]
        return out


def _bad_files_message(bad: pd.DataFrame) -> str:
    listed = "; ".join(f"{r.path}: {r.error}" for r in bad.itertuples())
    return (f"{len(bad)} file(s) cannot be used: {listed}. Fix or remove them, or set "
            f"data.on_bad_image: skip to leave them out (they are then listed in {REJECTED}).")


def merge_identical(manifest: pd.DataFrame, content_hash: pd.Series) -> pd.DataFrame:
    """Join groups that share an image with identical pixels (union-find), so exact
    duplicates, even under other names or formats, never straddle splits."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group, digest in zip(manifest["group"], content_hash):
        a, b = find(group), find(f"sha1:{digest}")
        if a != b:
            parent[b] = a
    out = manifest.copy()
    out["group"] = [find(g) for g in manifest["group"]]
    return out


def near_duplicates(split: pd.DataFrame, phash_hex: pd.Series, content_hash: pd.Series,
                    distance: int) -> pd.DataFrame:
    """Pairs of different images in different splits whose perceptual hashes differ in at
    most ``distance`` of 64 bits (vectorised Hamming distance, chunked to bound memory)."""
    columns = ["path_a", "split_a", "path_b", "split_b", "distance"]
    if distance <= 0 or len(split) < 2:
        return pd.DataFrame(columns=columns)
    hashes = np.array([int(h, 16) for h in phash_hex], dtype=np.uint64)
    which = split["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy()
    digests = content_hash.to_numpy()
    paths = split["path"].to_numpy()
    rows = []
    for start in range(0, len(hashes), 512):
        block = slice(start, start + 512)
        dist = np.bitwise_count(hashes[block, None] ^ hashes[None, :])
        i, j = np.nonzero(dist <= distance)
        i = i + start
        keep = (j > i) & (which[i] != which[j]) & (digests[i] != digests[j])
        for a, b in zip(i[keep], j[keep]):
            rows.append((paths[a], SPLITS[which[a]], paths[b], SPLITS[which[b]], int(dist[a - start, b])))
    return pd.DataFrame(rows, columns=columns)


def prepare(cfg: ExperimentConfig, progress=print) -> tuple[CachedDataset, DataReport]:
    data, run_dir = cfg.data, Path(cfg.run_dir)
    manifest = sources.manifest(data, cfg.storage.path)
    scanned = cache.scan(manifest, data.image_size, data.resize, Path(cfg.storage.path) / "cache", progress)

    bad_mask = scanned.info["error"].notna().to_numpy()
    rejected = manifest.loc[bad_mask, ["path", "label"]].assign(error=scanned.info.loc[bad_mask, "error"].to_numpy())
    if len(rejected) and data.on_bad_image == "error":
        raise DataError(_bad_files_message(rejected))
    run_dir.mkdir(parents=True, exist_ok=True)
    if len(rejected):
        rejected.to_parquet(run_dir / REJECTED, index=False)
    keep = np.flatnonzero(~bad_mask)
    manifest = manifest.iloc[keep].reset_index(drop=True)
    info = scanned.info.iloc[keep].reset_index(drop=True)
    if manifest.empty:
        raise DataError(f"no usable images in {data.root or 'the synthetic set'}")

    predefined = "split" in manifest and manifest["split"].notna().all()
    straddling: list[str] = []
    if predefined:  # the dataset's split is kept; say where it leaks rather than silently re-split
        per_group = manifest.assign(g=merge_identical(manifest, info["content_hash"])["group"]).groupby("g")["split"]
        straddling = sorted(per_group.nunique().loc[lambda n: n > 1].index)
    else:
        manifest = merge_identical(manifest, info["content_hash"])

    split_file = run_dir / SPLIT
    split = None
    if split_file.is_file():
        saved = pd.read_parquet(split_file)
        if saved[["path", "label"]].equals(manifest[["path", "label"]]) and saved["split"].notna().all():
            split = saved  # a resumed run keeps its test set
    if split is None:
        split = assign_splits(manifest, data.split)
        split.to_parquet(split_file, index=False)

    near = near_duplicates(split, info["phash"], info["content_hash"], data.near_duplicate_distance)
    if len(near):
        near.to_parquet(run_dir / NEAR_DUPLICATES, index=False)
    class_names = tuple(sorted(split["label"].unique()))
    counts = (split.groupby(["label", "split"]).size().unstack(fill_value=0)
              .reindex(columns=[s for s in SPLITS if s in set(split["split"])]))
    report = DataReport(counts=counts, groups=split["group"].nunique(), rejected=rejected,
                        duplicate_images=int(info["content_hash"].duplicated(keep=False).sum()),
                        near_duplicates=near, straddling_groups=straddling)
    pixels = scanned.pixels if len(keep) == len(scanned.pixels) else scanned.pixels[keep]
    return cache.share(split, pixels, class_names), report
