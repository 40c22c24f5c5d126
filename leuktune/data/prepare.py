"""The data side of a run, in flow order:

manifest -> examine every file once (cached) -> bad files stop the run or go to
``rejected.parquet`` -> identical images join one group -> group-disjoint split (saved
as ``split.parquet`` and reused on resume) -> near-duplicates across splits reported.
The search then shares the pixels with every trial through the Ray object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leuktune import runfolder
from leuktune.config import ExperimentConfig, representatives
from leuktune.data import cache, sources, stain
from leuktune.data.cache import CachedDataset
from leuktune.data.duplicates import (close_pairs, join_near_duplicates, merge_identical, near_duplicates,
                                     straddling_groups)
from leuktune.data.sources import DataError
from leuktune.data.split import SPLITS, assign_splits
from leuktune.runfolder import RunFolder


SHOWN = 20  # bad files a report lists by name; the rest are counted


@dataclass
class DataReport:
    """What a researcher should know about the data before trusting a result
    (what ``python -m leuktune.data`` prints; ``str(report)`` gives the same text)."""

    counts: pd.DataFrame  # images per class (rows) and split (columns)
    groups: int
    rejected: pd.DataFrame  # path, label, error
    duplicate_images: int  # images whose exact pixels occur more than once
    near_duplicates: pd.DataFrame  # path_a, split_a, path_b, split_b, distance
    straddling_groups: list[str] = field(default_factory=list)  # only possible in predefined splits
    joined_images: int = 0  # images that joined a near-duplicate's group before the split
    refused_groups: list[tuple[str, int]] = field(default_factory=list)  # joins that would have grown too big
    split: pd.DataFrame | None = None  # the usable files: path, label, group, split
    stored_in: str | None = None  # where its tables were written ("the run folder", a check's --out), None: nowhere

    @property
    def classes(self) -> list[str]:
        return list(self.counts.index)

    @property
    def images(self) -> int:
        return int(self.counts.values.sum())

    def lines(self) -> list[str]:
        out = [f"{self.images} images, {len(self.counts)} classes, {self.groups} groups", self.counts.to_string()]
        if len(self.rejected):
            out.append(f"{len(self.rejected)} bad file(s) left out{self._listed_in(runfolder.REJECTED)}:")
            out += [f"  {r.path}: {r.error}" for r in self.rejected.sort_values("path").head(SHOWN).itertuples()]
            if len(self.rejected) > SHOWN:
                out.append(f"  ... and {len(self.rejected) - SHOWN} more")
        if self.duplicate_images:
            out.append(f"{self.duplicate_images} images are exact duplicates of another; each set kept in one split")
        if self.joined_images:
            out.append(f"{self.joined_images} images joined the group of a near-duplicate (the same field saved "
                       "twice), so each set is in one split")
        if self.refused_groups:
            out.append(f"{len(self.refused_groups)} near-duplicate group(s) would have grown past "
                       f"data.near_duplicate_max_group images and were left apart (look-alike cells chain), e.g. "
                       + ", ".join(f"{g} ({n} images)" for g, n in self.refused_groups[:3]))
        if self.straddling_groups:
            out.append(f"WARNING: the dataset's own split puts {len(self.straddling_groups)} group(s) in two "
                       f"splits, e.g. {self.straddling_groups[:3]}: its test scores are inflated")
        if len(self.near_duplicates):
            out.append(f"WARNING: {len(self.near_duplicates)} near-duplicate image pair(s) across splits"
                       f"{self._listed_in(runfolder.NEAR_DUPLICATES)}, e.g.:")
            out += [f"  {r.path_a} ({r.split_a}) ~ {r.path_b} ({r.split_b}), distance {r.distance}"
                    for r in self.near_duplicates.head(10).itertuples()]
        return out

    def _listed_in(self, table: str) -> str:
        """Where a table of the report is, named only when it was written."""
        return f" (listed in {table} in {self.stored_in})" if self.stored_in else ""

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _bad_files_message(bad: pd.DataFrame) -> str:
    listed = "; ".join(f"{r.path}: {r.error}" for r in bad.itertuples())
    return (f"{len(bad)} file(s) cannot be used: {listed}. Fix or remove them, or set "
            f"data.on_bad_image: skip to leave them out (a search then lists them in its run folder's "
            f"{runfolder.REJECTED}).")


def _split(manifest: pd.DataFrame, cfg: ExperimentConfig, folder: RunFolder, record: bool) -> pd.DataFrame:
    """The saved split when it is of these very files (a resumed run keeps its test set), else a
    new one. Read back (``record`` False), the saved split is the run's record of its data: the
    files found now are matched to it row by row by label and file name (a built-in set made again
    elsewhere, data mounted at another path) and keep the paths it recorded, so the data's
    fingerprint is the one its trials were trained on; files that do not match are refused."""
    saved = folder.read_frame(runfolder.SPLIT) if folder.exists(runfolder.SPLIT) else None
    if saved is not None and saved["split"].notna().all():
        if saved[["path", "label"]].equals(manifest[["path", "label"]]):
            # The saved groups and splits, with the files as they are now (sizes, times).
            return manifest.assign(group=saved["group"].to_numpy(), split=saved["split"].to_numpy())
        if not record and _same_files(saved, manifest):
            return manifest.assign(path=saved["path"].to_numpy(), group=saved["group"].to_numpy(),
                                   split=saved["split"].to_numpy())
    if not record and saved is not None:
        raise DataError(f"{folder.uri()}: the data found now ({len(manifest)} files under "
                        f"{cfg.data.root or 'the built-in set'}) is not the data the run's {runfolder.SPLIT} recorded "
                        f"({len(saved)} files); its trials cannot be scored on it")
    split = assign_splits(manifest, cfg.data.split)
    if record:
        folder.write_table(runfolder.SPLIT, split)
    return split


def _same_files(saved: pd.DataFrame, manifest: pd.DataFrame) -> bool:
    """The same files in the same order, wherever they are now: labels and file names match."""
    if len(saved) != len(manifest) or not (saved["label"].to_numpy() == manifest["label"].to_numpy()).all():
        return False
    return all(a.rsplit("/", 1)[-1] == b.rsplit("/", 1)[-1] for a, b in zip(saved["path"], manifest["path"]))


def prepare(cfg: ExperimentConfig, progress=print, *, folder: RunFolder | None = None,
            record: bool = True) -> tuple[CachedDataset, DataReport]:
    """The run's data, split and checked, with the pixels decoded once (and cached on disk).

    ``folder`` is the run's folder (default: where the config says a search writes it);
    ``record`` False writes nothing into it: an existing run's data is read back through its saved
    split, a run not yet searched gets the split a search would make; bad files and near-duplicates
    are reported, not stored."""
    data, folder = cfg.data, folder or RunFolder.of(cfg)
    manifest = sources.manifest(data, folder.datasets)
    # One decoded copy per stain method the search can draw (each kept in the decode-once cache):
    # the first is the data's own, the others go with it for the trials that draw them.
    normalizers = {m: stain.from_config(data, m) for m in representatives(data.stain_normalize)}
    scans = {m: cache.scan(manifest, data.image_size, data.resize, folder.cache, progress, n)
             for m, n in normalizers.items()}
    method, scanned = next(iter(scans.items()))

    rejected = scanned.rejected(manifest)
    if len(rejected) and data.on_bad_image == "error":
        raise DataError(_bad_files_message(rejected))
    if len(rejected) and record:
        folder.write_table(runfolder.REJECTED, rejected)
    keep = np.flatnonzero(scanned.usable)
    manifest = manifest.iloc[keep].reset_index(drop=True)
    info = scanned.info.iloc[keep].reset_index(drop=True)
    if manifest.empty:
        raise DataError(f"no usable images in {data.root or 'the synthetic set'}")

    predefined = "split" in manifest and manifest["split"].notna().all()
    # A dataset's own split is kept: say where it leaks rather than silently re-split.
    straddling = straddling_groups(manifest, info["content_hash"]) if predefined else []
    # Rows keep their order from here to the split, so one set of pairs serves grouping and report.
    pairs = close_pairs(info["phash"], data.near_duplicate_distance if data.near_duplicates != "off" else 0)
    joined, refused = 0, []
    if not predefined:
        manifest = merge_identical(manifest, info["content_hash"])
        if data.near_duplicates == "group":
            manifest, joined, refused = join_near_duplicates(manifest, pairs, data.near_duplicate_max_group)
    split = _split(manifest, cfg, folder, record)

    near = near_duplicates(split, pairs, info["content_hash"])
    if len(near) and record:
        folder.write_table(runfolder.NEAR_DUPLICATES, near)
    class_names = tuple(sorted(split["label"].unique()))
    counts = (split.groupby(["label", "split"]).size().unstack(fill_value=0)
              .reindex(columns=[s for s in SPLITS if s in set(split["split"])]))
    report = DataReport(counts=counts, groups=split["group"].nunique(), rejected=rejected,
                        duplicate_images=int(info["content_hash"].duplicated(keep=False).sum()),
                        near_duplicates=near, straddling_groups=straddling, joined_images=joined,
                        refused_groups=refused, split=split, stored_in="the run folder" if record else None)
    def usable(scan: cache.Scan) -> np.ndarray:
        return scan.pixels if len(keep) == len(scan.pixels) else scan.pixels[keep]

    def reference(m: str) -> np.ndarray | None:
        return normalizers[m].pixels if normalizers[m] else None

    restained = {m: (usable(s), reference(m)) for m, s in scans.items() if m != method}
    return cache.dataset(split, usable(scanned), class_names, reference(method), method, restained), report
