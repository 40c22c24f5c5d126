"""Sites (labs): which lab each image comes from, a column of every manifest and split table.

This module owns the column: its name (``SITE``), the name a single source's one site gets
(``default_name``), the order sites are listed in (``names``), one set of class names over
every lab (``map_classes``, data.classes), and what the data check says per site (``counts``,
``missing_classes``, ``spanning_groups``). A model that fits one lab's look is only known to
hold at another when the data says which lab each cell came from.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pandas as pd

from leuktune import uris
from leuktune.config import DataConfig
from leuktune.data.files import DataError

SITE = "site"  # the column: a str, the lab's name
SYNTHETIC = "synthetic"  # the built-in set's site when data.root does not name its folder


def default_name(data: DataConfig) -> str:
    """The one site of a single-source experiment: data.root's last part (a manifest file's name
    without its suffix: /data/giib.csv is giib), or ``synthetic`` for the built-in set."""
    if data.root is None:
        return SYNTHETIC
    last = uris.split_last(str(data.root).rstrip("/"))[1] or str(data.root)
    return PurePosixPath(last).stem if data.source == "csv" else last


def names(frame: pd.DataFrame) -> list[str]:
    """The sites of a manifest or split table in a stable order: as they first appear (data.sites's
    order; a CSV manifest's row order)."""
    return list(dict.fromkeys(frame[SITE].astype(str))) if SITE in frame else []


def check_column(values: pd.Series, where: str) -> pd.Series:
    """A manifest's own site column as strings; an empty or missing entry is a DataError naming the row."""
    text = values.astype("string").str.strip()
    bad = text.isna() | (text == "")
    if bad.any():
        raise DataError(f"{where}: column site is empty in {int(bad.sum())} row(s), e.g. row {int(bad.idxmax()) + 2} "
                        "of the file; expected each row's lab name (text), or no site column")
    return text.astype(str)


def map_classes(manifest: pd.DataFrame, data: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest with data.classes's names for its labels (case-insensitive; a class's own name
    matches too), and the rows whose label maps to no class (path, label, site, error): a DataError
    naming the site, the label and the classes, unless data.unmapped is skip."""
    empty = pd.DataFrame(columns=["path", "label", SITE, "error"])
    if data.classes is None:
        return manifest, empty
    meaning = {str(x).casefold(): name for name, labels in data.classes.items() for x in (name, *labels)}
    mapped = manifest["label"].map(lambda label: meaning.get(str(label).casefold()))
    lost = mapped.isna()
    if lost.any() and data.unmapped == "error":
        first = manifest[lost].iloc[0]
        others = sorted(set(zip(manifest.loc[lost, SITE], manifest.loc[lost, "label"])) - {(first[SITE], first["label"])})
        raise DataError(f"site {first[SITE]!r}: folder (label) {first['label']!r} maps to no class of data.classes "
                        f"(known: {', '.join(data.classes)}); add it to one class's list, or set data.unmapped: "
                        "skip to leave its images out"
                        + (f" (also unmapped: {', '.join(f'{s}/{x}' for s, x in others)})" if others else ""))
    left_out = manifest.loc[lost, ["path", "label", SITE]].assign(
        error=[f"label {x!r} at site {s!r} maps to no class of data.classes (data.unmapped: skip)"
               for x, s in zip(manifest.loc[lost, "label"], manifest.loc[lost, SITE])])
    kept = manifest.loc[~lost].assign(label=mapped[~lost].astype(str)).reset_index(drop=True)
    return kept, left_out.reset_index(drop=True)


def counts(split: pd.DataFrame, splits: tuple[str, ...]) -> pd.DataFrame:
    """Images per site and class (rows) and split (columns, with the total), sites in ``names`` order."""
    table = (split.groupby([SITE, "label"]).size().rename("n").reset_index()
             .merge(split.groupby([SITE, "label", "split"]).size().unstack(fill_value=0).reset_index(),
                    on=[SITE, "label"]))
    order = {s: i for i, s in enumerate(names(split))}
    table = table.sort_values([SITE, "label"], key=lambda c: c.map(order) if c.name == SITE else c)
    columns = [s for s in splits if s in table]
    return table.set_index([SITE, "label"])[columns + ["n"]].rename(columns={"n": "total"})


def missing_classes(split: pd.DataFrame) -> dict[str, list[str]]:
    """Per site, the classes of the experiment it has no image of (sites missing none left out)."""
    classes = sorted(split["label"].unique())
    have = split.groupby(SITE)["label"].agg(set)
    return {site: missing for site in names(split) if (missing := [c for c in classes if c not in have[site]])}


def spanning_groups(split: pd.DataFrame) -> pd.DataFrame:
    """Groups (patients, identical or near-duplicate images) with images at more than one site:
    group, sites (joined by ', ', in ``names`` order), images."""
    columns = ["group", "sites", "images"]
    if SITE not in split or split[SITE].nunique() < 2:
        return pd.DataFrame(columns=columns)
    order = {s: i for i, s in enumerate(names(split))}
    per = split.groupby("group")[SITE].agg(lambda s: sorted(set(s), key=order.get))
    many = per[per.map(len) > 1]
    sizes = split.groupby("group").size()
    return pd.DataFrame({"group": many.index, "sites": [", ".join(s) for s in many],
                         "images": sizes[many.index].to_numpy()}, columns=columns).reset_index(drop=True)
