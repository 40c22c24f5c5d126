"""Stratified train/val/test assignment that never lets a group straddle two splits.

Groups (patients, or sets of identical images) are dealt out class by class, in a
seeded random order, each to the split furthest below its target share of that class's
images. With one image per group this is an exact stratified split (within one image
per class of the target). A split predefined by the dataset is kept; when it has no
validation part, one is dealt out of its training part the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leuktune.config import SplitConfig
from leuktune.data.sources import DataError

SPLITS = ("train", "val", "test")


def deal(manifest: pd.DataFrame, fractions: dict[str, float], seed: int) -> pd.Series:
    """Each row's split, its group dealt whole (see the module's docstring)."""
    wanted = [s for s in fractions if fractions[s] > 0]
    rng = np.random.default_rng(seed)
    # A group's class is its most common label (patients carry one diagnosis).
    group_label = manifest.groupby("group")["label"].agg(lambda s: s.value_counts().index[0])
    group_size = manifest.groupby("group").size()
    assignment: dict[str, str] = {}
    for label in sorted(group_label.unique()):
        groups = np.array(sorted(group_label.index[group_label == label]))
        if len(groups) < len(wanted):
            raise DataError(
                f"class {label!r} has {len(groups)} group(s) (patients or distinct images); the split "
                f"{'/'.join(wanted)} needs at least {len(wanted)}: add images or change data.split"
            )
        groups = groups[rng.permutation(len(groups))]
        total = group_size[groups].sum()
        filled = {s: 0 for s in wanted}
        # Give every split one group first, so no split lacks a class.
        for s, g in zip(wanted, groups):
            assignment[g] = s
            filled[s] += group_size[g]
        for g in groups[len(wanted):]:
            s = max(wanted, key=lambda s: fractions[s] * total - filled[s])
            assignment[g] = s
            filled[s] += group_size[g]
    return manifest["group"].map(assignment)


def assign_splits(manifest: pd.DataFrame, split: SplitConfig) -> pd.DataFrame:
    out = manifest.copy()
    if "split" in out and out["split"].notna().all():
        if "val" in set(out["split"]) or split.val == 0:
            return out
        train = out[out["split"] == "train"]
        out.loc[train.index, "split"] = deal(train, {"train": split.train, "val": split.val}, split.seed)
        return out
    out["split"] = deal(out, {"train": split.train, "val": split.val, "test": split.test}, split.seed)
    return out
