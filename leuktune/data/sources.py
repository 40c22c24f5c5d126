"""Dataset layouts on disk -> a manifest: one row per image with ``path, label, group``.

``group`` is the unit that must never straddle splits: the patient where a dataset
records one, else the image's own id.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leuktune.config import DataConfig
from leuktune.data import synthetic

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class DataError(ValueError):
    """A dataset problem, naming the path and what was expected."""


def imagefolder(root: str | Path) -> pd.DataFrame:
    """Class-named sub-folders of images: ``root/<class>/<image>``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (data.root); expected a folder with one sub-folder per class")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<images>")
    rows = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            rows.append({"path": str(f.resolve()), "label": class_dir.name,
                         "group": str(f.relative_to(root).with_suffix(""))})
    return pd.DataFrame(rows, columns=["path", "label", "group"])


def manifest(data: DataConfig, storage_path: str) -> pd.DataFrame:
    """The manifest for ``data.source``; the synthetic set is written to disk first."""
    if data.source == "synthetic":
        params = data.synthetic.model_dump()
        root = data.root or synthetic.default_root(storage_path, params)
        synthetic.generate(root, **params)
        return imagefolder(root)
    if data.source == "imagefolder":
        return imagefolder(data.root)
    raise DataError(f"data.source {data.source!r} is not supported")
