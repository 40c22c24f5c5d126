"""Dataset layouts on disk -> a manifest: one row per image with ``path, label, group``
(and ``split`` where the dataset predefines one).

``group`` is the unit that must never straddle splits: the patient where a dataset
records one (C-NMC), else the image's own id; images with identical pixels are joined
into one group later, once they are decoded (leuktune.data.prepare).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from leuktune.config import DataConfig
from leuktune.data import synthetic

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# Predefined split folder names (case-insensitive), e.g. the Kaggle blood-cells TRAIN/TEST.
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


class DataError(ValueError):
    """A dataset problem, naming the path and what was expected."""


def images_under(folder: Path) -> list[Path]:
    """The image files under ``folder`` (sorted), by suffix; hidden files and folders (macOS's
    ``._*`` companions, ``.ipynb_checkpoints``) are not images of the set."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _require_dir(root: Path | None, what: str) -> Path:
    if root is None:
        raise DataError(f"data.root is required: {what}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (data.root); expected {what}")
    return root.absolute()  # not resolve(): groups are named by the path under root, symlinks and all


def _class_folders(root: Path, split: str | None = None) -> list[dict]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<images>")
    rows = []
    for class_dir in class_dirs:
        files = images_under(class_dir)
        if not files:
            raise DataError(f"{class_dir}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            row = {"path": str(f.resolve()), "label": class_dir.name,
                   "group": str(f.relative_to(root.parent).with_suffix(""))}
            if split:
                row["split"] = split
            rows.append(row)
    return rows


def imagefolder(root: str | Path | None) -> pd.DataFrame:
    """``root/<class>/<image>``, or with predefined splits ``root/{train,val,test}/<class>/<image>``."""
    root = _require_dir(root, "a folder with one sub-folder per class")
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    split_dirs = {d: SPLIT_FOLDERS[d.name.lower()] for d in subdirs if d.name.lower() in SPLIT_FOLDERS}
    if split_dirs and len(split_dirs) == len(subdirs):
        rows = [r for d, s in sorted(split_dirs.items()) for r in _class_folders(d, s)]
        return pd.DataFrame(rows, columns=["path", "label", "group", "split"])
    return pd.DataFrame(_class_folders(root), columns=["path", "label", "group"])


# C-NMC 2019: UID_<patient>_<image>_<cell>_<all|hem>.bmp; healthy donors are H<id>.
_CNMC_NAME = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.bmp$", re.IGNORECASE)
_CNMC_LABELS = ("all", "hem")  # folder names, and the labels


def cnmc(root: str | Path | None) -> pd.DataFrame:
    """C-NMC 2019: ``fold_*/{all,hem}/UID_*.bmp`` with patient groups, plus the preliminary
    test folder when its labels CSV is present (columns Patient_ID, new_names, labels)."""
    root = _require_dir(root, "the C-NMC 2019 layout fold_0|fold_1|fold_2/{all,hem}/UID_<patient>_..._{all|hem}.bmp")
    rows, unnamed = [], []
    for f in images_under(root):
        if f.parent.name.lower() not in _CNMC_LABELS:
            continue
        m = _CNMC_NAME.match(f.name)
        if not m:
            unnamed.append(f)
            continue
        label = f.parent.name.lower()
        if m.group(4).lower() != label:
            raise DataError(f"{f}: file name says {m.group(4)!r} but it is in folder {f.parent.name!r}")
        rows.append({"path": str(f.resolve()), "label": label, "group": f"patient-{m.group(1).upper()}"})
    if unnamed:
        raise DataError(f"{len(unnamed)} file(s) under {root} do not follow UID_<patient>_<image>_<cell>_<all|hem>.bmp, "
                        f"e.g. {unnamed[0]}")
    for labels_csv in sorted(root.rglob("*labels*.csv")):
        table = pd.read_csv(labels_csv)
        if not {"Patient_ID", "new_names", "labels"} <= set(table.columns):
            continue
        folder = next((d for d in labels_csv.parent.iterdir() if d.is_dir()
                       and all((d / n).is_file() for n in table["new_names"].head(3))), None)
        if folder is None:
            raise DataError(f"{labels_csv}: no folder beside it holds its images ({table['new_names'].iloc[0]}, ...)")
        for r in table.itertuples(index=False):
            m = _CNMC_NAME.match(str(r.Patient_ID))
            if not m:
                raise DataError(f"{labels_csv}: Patient_ID {r.Patient_ID!r} is not UID_<patient>_..._<all|hem>.bmp")
            rows.append({"path": str((folder / r.new_names).resolve()), "label": "all" if int(r.labels) == 1 else "hem",
                         "group": f"patient-{m.group(1).upper()}"})
    if not rows:
        raise DataError(f"{root}: no C-NMC images found; expected fold_*/all/*.bmp and fold_*/hem/*.bmp")
    return pd.DataFrame(rows, columns=["path", "label", "group"])


# ALL-IDB1/2: ImNNN_L.jpg|tif with L = 1 (lymphoblast present) or 0 (healthy).
_ALLIDB_NAME = re.compile(r"^Im(\d+)_([01])\.(jpe?g|tiff?)$", re.IGNORECASE)


def allidb(root: str | Path | None) -> pd.DataFrame:
    root = _require_dir(root, "ALL-IDB images named ImNNN_L.jpg or ImNNN_L.tif (L = 1 blast, 0 healthy)")
    rows = []
    for f in images_under(root):
        m = _ALLIDB_NAME.match(f.name)
        if m:
            rows.append({"path": str(f.resolve()), "label": "ALL" if m.group(2) == "1" else "healthy",
                         "group": str(f.relative_to(root).with_suffix(""))})
    if not rows:
        raise DataError(f"{root}: no files named ImNNN_L.jpg|tif (ALL-IDB layout)")
    return pd.DataFrame(rows, columns=["path", "label", "group"])


def table(path: str | Path | None) -> pd.DataFrame:
    """A CSV or Parquet manifest: columns path, label, optionally group and split.
    Relative paths are relative to the manifest file."""
    if path is None:
        raise DataError("data.root is required: the CSV or Parquet manifest file")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: manifest file not found (data.root); expected a .csv or .parquet file")
    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected path, label[, group, split]")
    frame = frame.copy()
    frame["path"] = [str((path.parent / p).resolve()) for p in frame["path"].astype(str)]
    frame["label"] = frame["label"].astype(str)
    absent = [p for p in frame["path"] if not Path(p).is_file()]
    if absent:
        raise DataError(f"{path}: {len(absent)} listed file(s) do not exist, e.g. {absent[0]}")
    if "group" not in frame:
        frame["group"] = frame["path"]
    frame["group"] = frame["group"].astype(str)
    if "split" in frame:
        bad = sorted(set(frame["split"].astype(str)) - {"train", "val", "test"})
        if bad:
            raise DataError(f"{path}: column split has {bad}; expected train, val or test")
    return frame[[c for c in ("path", "label", "group", "split") if c in frame]]


def manifest(data: DataConfig, datasets: Path) -> pd.DataFrame:
    """The manifest for ``data.source``; the synthetic set is written to disk first (under
    ``datasets`` unless data.root says where)."""
    if data.source == "synthetic":
        params = data.synthetic.model_dump()
        root = data.root or synthetic.default_root(datasets, params)
        synthetic.generate(root, **params)
        return imagefolder(root)
    readers = {"imagefolder": imagefolder, "cnmc": cnmc, "allidb": allidb, "csv": table}
    return readers[data.source](data.root)
