"""Dataset layouts on disk -> a manifest: one row per image with ``path, label, group, site``
(and ``split`` where the dataset predefines one).

``group`` is the unit that must never straddle splits: the patient where a dataset
records one (C-NMC), else the image's own id; images with identical pixels are joined
into one group later, once they are decoded (leuktune.data.prepare). ``site`` is the lab
(leuktune.data.sites): data.sites's names, a CSV manifest's site column, else one site named
after data.root.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path, PurePosixPath

import pandas as pd

from leuktune import uris
from leuktune.config import DataConfig
from leuktune.data import files, sites, synthetic
from leuktune.data.files import IMAGE_SUFFIXES, DataError, Listing

# Predefined split folder names (case-insensitive), e.g. the Kaggle blood-cells TRAIN/TEST.
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
COLUMNS = ["path", "label", "group"]
# Each file's size and modification time ride along: they key the decoded cache (leuktune.data.cache).
FILE_COLUMNS = ["bytes", "mtime_ns"]


def images_under(folder: str | Path) -> list[str]:
    """The image files under a folder (local or a bucket prefix), as a dataset's are found."""
    return [e.location for e in files.walk(str(folder), "a folder of images").images()]


def _listing(root: str | Path | None, expected: str) -> Listing:
    if root is None:
        raise DataError(f"data.root is required: {expected}")
    return files.walk(str(root), expected)


def _row(entry: files.Entry, label: str, group: str, **extra) -> dict:
    return {"path": entry.location, "label": label, "group": group, "bytes": entry.bytes,
            "mtime_ns": entry.mtime_ns, **extra}


def _frame(rows: list[dict], *extra: str) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*COLUMNS, *extra, *FILE_COLUMNS])


def _class_folders(listing: Listing, under: str = "", split: str | None = None) -> list[dict]:
    class_dirs = listing.subfolders(under)
    where = listing.location_of(under)
    if not class_dirs:
        raise DataError(f"{where}: no class sub-folders; expected {where}/<class name>/<images>")
    rows, name = [], listing.name
    for class_dir in class_dirs:
        images = listing.images(class_dir)
        if not images:
            raise DataError(f"{listing.location_of(class_dir)}: class folder holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        for e in images:
            # The group is named by the path under the root's parent, symlinks and all.
            group = str(PurePosixPath(name, e.rel).with_suffix(""))
            rows.append(_row(e, PurePosixPath(class_dir).name, group, **({"split": split} if split else {})))
    return rows


def imagefolder(root: str | Path | None) -> pd.DataFrame:
    """``root/<class>/<image>``, or with predefined splits ``root/{train,val,test}/<class>/<image>``."""
    listing = _listing(root, "a folder with one sub-folder per class")
    subdirs = listing.subfolders()
    split_dirs = {d: SPLIT_FOLDERS[d.lower()] for d in subdirs if d.lower() in SPLIT_FOLDERS}
    if split_dirs and len(split_dirs) == len(subdirs):
        rows = [r for d, s in sorted(split_dirs.items()) for r in _class_folders(listing, d, s)]
        return _frame(rows, "split")
    return _frame(_class_folders(listing))


# C-NMC 2019: UID_<patient>_<image>_<cell>_<all|hem>.bmp; healthy donors are H<id>.
_CNMC_NAME = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.bmp$", re.IGNORECASE)
_CNMC_LABELS = ("all", "hem")  # folder names, and the labels


def cnmc(root: str | Path | None) -> pd.DataFrame:
    """C-NMC 2019: ``fold_*/{all,hem}/UID_*.bmp`` with patient groups, plus the preliminary
    test folder when its labels CSV is present (columns Patient_ID, new_names, labels)."""
    listing = _listing(root, "the C-NMC 2019 layout fold_0|fold_1|fold_2/{all,hem}/UID_<patient>_..._{all|hem}.bmp")
    rows, unnamed = [], []
    for e in listing.images():
        path = PurePosixPath(e.rel)
        if path.parent.name.lower() not in _CNMC_LABELS:
            continue
        m = _CNMC_NAME.match(path.name)
        if not m:
            unnamed.append(e.location)
            continue
        label = path.parent.name.lower()
        if m.group(4).lower() != label:
            raise DataError(f"{e.location}: file name says {m.group(4)!r} but it is in folder {path.parent.name!r}")
        rows.append(_row(e, label, f"patient-{m.group(1).upper()}"))
    if unnamed:
        raise DataError(f"{len(unnamed)} file(s) under {listing.root} do not follow "
                        f"UID_<patient>_<image>_<cell>_<all|hem>.bmp, e.g. {unnamed[0]}")
    for rel, labels_csv in listing.files.items():
        if not PurePosixPath(rel).match("*labels*.csv"):
            continue
        table = files.read_table(labels_csv.location)
        if not {"Patient_ID", "new_names", "labels"} <= set(table.columns):
            continue
        beside = listing.subfolders(str(PurePosixPath(rel).parent))
        folder = next((d for d in beside if all(f"{d}/{n}" in listing.files for n in table["new_names"].head(3))),
                      None)
        if folder is None:
            raise DataError(f"{labels_csv.location}: no folder beside it holds its images "
                            f"({table['new_names'].iloc[0]}, ...)")
        for r in table.itertuples(index=False):
            m = _CNMC_NAME.match(str(r.Patient_ID))
            if not m:
                raise DataError(f"{labels_csv.location}: Patient_ID {r.Patient_ID!r} is not "
                                "UID_<patient>_..._<all|hem>.bmp")
            image = listing.files.get(f"{folder}/{r.new_names}")
            if image is None:
                raise DataError(f"{labels_csv.location}: lists {r.new_names}, which is not in {folder}")
            rows.append(_row(image, "all" if int(r.labels) == 1 else "hem", f"patient-{m.group(1).upper()}"))
    if not rows:
        raise DataError(f"{listing.root}: no C-NMC images found; expected fold_*/all/*.bmp and fold_*/hem/*.bmp")
    return _frame(rows)


# ALL-IDB1/2: ImNNN_L.jpg|tif with L = 1 (lymphoblast present) or 0 (healthy).
_ALLIDB_NAME = re.compile(r"^Im(\d+)_([01])\.(jpe?g|tiff?)$", re.IGNORECASE)


def allidb(root: str | Path | None) -> pd.DataFrame:
    listing = _listing(root, "ALL-IDB images named ImNNN_L.jpg or ImNNN_L.tif (L = 1 blast, 0 healthy)")
    rows = []
    for e in listing.images():
        m = _ALLIDB_NAME.match(PurePosixPath(e.rel).name)
        if m:
            rows.append(_row(e, "ALL" if m.group(2) == "1" else "healthy", str(PurePosixPath(e.rel).with_suffix(""))))
    if not rows:
        raise DataError(f"{listing.root}: no files named ImNNN_L.jpg|tif (ALL-IDB layout)")
    return _frame(rows)


def _listed_location(manifest: str, listed: str) -> str:
    """A manifest's path column entry as a location: a URI or an absolute local path as it is,
    a relative one from the manifest's folder (in the manifest's bucket for a manifest in one)."""
    if uris.is_uri(listed):
        return listed
    if not uris.is_uri(manifest):
        return str((Path(manifest).parent / listed).resolve())
    folder = posixpath.dirname(uris.resolve(manifest)[1])
    return uris.child(manifest, posixpath.normpath(posixpath.join(folder, listed)))


def table(path: str | Path | None) -> pd.DataFrame:
    """A CSV or Parquet manifest: columns path, label, optionally group, site and split. Relative paths
    are relative to the manifest file; the manifest and its images may be local or in a bucket."""
    if path is None:
        raise DataError("data.root is required: the CSV or Parquet manifest file")
    path = str(path) if uris.is_uri(path) else uris.local_path(path)
    if not files.is_file(path):
        raise DataError(f"{path}: manifest file not found (data.root); expected a .csv or .parquet file")
    frame = files.read_table(path)
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected path, label[, group, site, split]")
    frame = frame.copy()
    frame["path"] = [_listed_location(path, p) for p in frame["path"].astype(str)]
    frame["label"] = frame["label"].astype(str)
    stats = files.stat(frame["path"].tolist())
    absent = [p for p, s in zip(frame["path"], stats) if s is None]
    if absent:
        raise DataError(f"{path}: {len(absent)} listed file(s) do not exist, e.g. {absent[0]}")
    frame["bytes"], frame["mtime_ns"] = [s[0] for s in stats], [s[1] for s in stats]
    if "group" not in frame:
        frame["group"] = frame["path"].map(uris.identity)
    frame["group"] = frame["group"].astype(str)
    if sites.SITE in frame:
        frame[sites.SITE] = sites.check_column(frame[sites.SITE], path)
    if "split" in frame:
        bad = sorted(set(frame["split"].astype(str)) - {"train", "val", "test"})
        if bad:
            raise DataError(f"{path}: column split has {bad}; expected train, val or test")
    return frame[[c for c in (*COLUMNS, sites.SITE, "split", *FILE_COLUMNS) if c in frame]]


def _read(source: str, root: str | None, params: dict, datasets: Path, lab: str | None = None) -> pd.DataFrame:
    """One source's images; the synthetic set is written to disk first (under ``datasets`` unless
    ``root`` says where; a site's own folder keyed by its name too, so no two sites share files)."""
    if source == "synthetic":
        where = root or synthetic.default_root(datasets, params if lab is None else {**params, "lab": lab})
        synthetic.generate(where, **params)
        return imagefolder(where)
    readers = {"imagefolder": imagefolder, "cnmc": cnmc, "allidb": allidb, "csv": table}
    return readers[source](root)


def _at_site(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """One site of data.sites: its rows named by the site, and its groups too (patient P1 of one
    lab is not patient P1 of another; identical images still join across sites in prepare)."""
    frame = frame.assign(group=name + ":" + frame["group"].astype(str))
    frame[sites.SITE] = name  # the site's name wins over a CSV's own site column
    return frame


def manifest(data: DataConfig, datasets: Path) -> pd.DataFrame:
    """The manifest for ``data.source`` (or each of ``data.sites``, in their order), with its
    ``site`` column; the synthetic set is written to disk first (under ``datasets`` unless
    data.root says where)."""
    if data.sites:
        frames = [_at_site(_read(s.source, s.root, s.synthetic.model_dump(), datasets, lab=name), name)
                  for name, s in data.sites.items()]
        frame = pd.concat(frames, ignore_index=True)
    else:
        frame = _read(data.source, data.root, data.synthetic.model_dump(), datasets)
        if sites.SITE not in frame:
            frame[sites.SITE] = sites.default_name(data)
    ordered = [c for c in (*COLUMNS, sites.SITE, "split", *FILE_COLUMNS) if c in frame]
    return frame[ordered + [c for c in frame if c not in ordered]]
