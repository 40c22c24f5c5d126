"""The data side of a run, in flow order:

manifest -> examine every file once (cached) -> bad files stop the run or go to
``rejected.parquet`` -> identical images join one group -> group-disjoint split (saved
as ``split.parquet`` and reused on resume) -> near-duplicates across splits reported.
The search then shares the pixels with every trial through the Ray object store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leuktune import runfolder
from leuktune.config import ExperimentConfig, representatives
from leuktune.data import cache, sites, sources, stain
from leuktune.data.cache import CachedDataset
from leuktune.data.duplicates import (close_pairs, join_near_duplicates, merge_identical, near_duplicates,
                                     straddling_groups)
from leuktune.data.sources import DataError
from leuktune.data.report import DataReport
from leuktune.data.split import SPLITS, assign_splits, check_test_sites, leaving_test_groups
from leuktune.runfolder import RunFolder


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
    split = assign_splits(manifest, cfg.data.split, cfg.data.test_sites)
    if record:
        folder.write_table(runfolder.SPLIT, split)
    return split


def _same_files(saved: pd.DataFrame, manifest: pd.DataFrame) -> bool:
    """The same files in the same order, wherever they are now: labels and file names match."""
    if len(saved) != len(manifest) or not (saved["label"].to_numpy() == manifest["label"].to_numpy()).all():
        return False
    return all(a.rsplit("/", 1)[-1] == b.rsplit("/", 1)[-1] for a, b in zip(saved["path"], manifest["path"]))


def _kept_pairs(pairs: list[tuple[int, int, int]], kept: np.ndarray) -> list[tuple[int, int, int]]:
    """``close_pairs`` of the rows still ``kept``, numbered as the rows are once the others are gone."""
    new = np.cumsum(kept) - 1
    return [(int(new[i]), int(new[j]), d) for i, j, d in pairs if kept[i] and kept[j]]


def prepare(cfg: ExperimentConfig, progress=print, *, folder: RunFolder | None = None,
            record: bool = True) -> tuple[CachedDataset, DataReport]:
    """The run's data, split and checked, with the pixels decoded once (and cached on disk).

    ``folder`` is the run's folder (default: where the config says a search writes it);
    ``record`` False writes nothing into it: an existing run's data is read back through its saved
    split, a run not yet searched gets the split a search would make; bad files and near-duplicates
    are reported, not stored."""
    data, folder = cfg.data, folder or RunFolder.of(cfg)
    manifest = sources.manifest(data, folder.datasets)
    check_test_sites(manifest, data.test_sites)
    # data.classes is applied before anything is decoded: a label it misses stops here, named
    manifest, unmapped = sites.map_classes(manifest, data)
    # One decoded copy per stain method the search can draw (each kept in the decode-once cache):
    # the first is the data's own, the others go with it for the trials that draw them.
    normalizers = {m: stain.from_config(data, m) for m in representatives(data.stain_normalize)}
    scans = {m: cache.scan(manifest, data.image_size, data.resize, folder.cache, progress, n)
             for m, n in normalizers.items()}
    method, scanned = next(iter(scans.items()))

    bad = scanned.rejected(manifest)
    if len(bad) and data.on_bad_image == "error":
        raise DataError(_bad_files_message(bad))
    keep = np.flatnonzero(scanned.usable)
    manifest = manifest.iloc[keep].reset_index(drop=True)
    info = scanned.info.iloc[keep].reset_index(drop=True)
    if manifest.empty:
        raise DataError(f"no usable images in {data.root or ', '.join(data.sites or {}) or 'the synthetic set'}")

    # A dataset's own split is kept (not when data.test_sites decides the test split)
    predefined = "split" in manifest and manifest["split"].notna().all() and not data.test_sites
    # A dataset's own split is kept: say where it leaks rather than silently re-split.
    straddling = straddling_groups(manifest, info["content_hash"]) if predefined else []
    # Rows keep their order from here to the split, so one set of pairs serves grouping and report.
    pairs = close_pairs(info["phash"], data.near_duplicate_distance if data.near_duplicates != "off" else 0)
    joined, refused = 0, []
    if not predefined:
        manifest = merge_identical(manifest, info["content_hash"])
        if data.near_duplicates == "group":
            manifest, joined, refused = join_near_duplicates(manifest, pairs, data.near_duplicate_max_group)
    spanning = sites.spanning_groups(manifest)  # before a test site's groups leave the training sites
    kept, leaked = leaving_test_groups(manifest, data.test_sites)
    if not kept.all():
        manifest, info = manifest[kept].reset_index(drop=True), info[kept].reset_index(drop=True)
        pairs, keep = _kept_pairs(pairs, kept), keep[kept]
    split = _split(manifest, cfg, folder, record)

    rejected = pd.concat([t for t in (unmapped, bad, leaked) if len(t)] or [bad], ignore_index=True)
    near = near_duplicates(split, pairs, info["content_hash"])
    if record:
        for name, table in ((runfolder.REJECTED, rejected), (runfolder.NEAR_DUPLICATES, near),
                            (runfolder.SPANNING_GROUPS, spanning)):
            if len(table):
                folder.write_table(name, table)
    class_names = tuple(sorted(split["label"].unique()))
    counts = (split.groupby(["label", "split"]).size().unstack(fill_value=0)
              .reindex(columns=[s for s in SPLITS if s in set(split["split"])]))
    report = DataReport(counts=counts, groups=split["group"].nunique(), rejected=rejected,
                        duplicate_images=int(info["content_hash"].duplicated(keep=False).sum()),
                        near_duplicates=near, straddling_groups=straddling, joined_images=joined,
                        refused_groups=refused, split=split, stored_in="the run folder" if record else None,
                        site_counts=sites.counts(split, SPLITS), missing_classes=sites.missing_classes(split),
                        spanning_groups=spanning)

    def usable(scan: cache.Scan) -> np.ndarray:
        return scan.pixels if len(keep) == len(scan.pixels) else scan.pixels[keep]

    def reference(m: str) -> np.ndarray | None:
        return normalizers[m].pixels if normalizers[m] else None

    restained = {m: (usable(s), reference(m)) for m, s in scans.items() if m != method}
    return cache.dataset(split, usable(scanned), class_names, reference(method), method, restained), report
