"""Stratified train/val/test assignment that never lets a group straddle two splits.

Groups (patients, or sets of identical images) are dealt out class by class, in a
seeded random order, each to the split furthest below its target share of that class's
images. With one image per group this is an exact stratified split (within one image
per class of the target). A split predefined by the dataset is kept; when it has no
validation part, one is dealt out of its training part the same way.

With several sites (leuktune.data.sites) the groups are dealt per site and class, so every
lab is in every split in its share. With data.test_sites those labs are the test split, whole
(a predefined split is then not kept): the other labs are dealt into train/val by the train and
val shares renormalised, and a group with an image at a test site is the test site's alone:
its images at training sites are left out (``leaving_test_groups``), so nothing a test lab
shows, not even a duplicate of it, is trained or chosen on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leuktune.config import ConfigError, SplitConfig
from leuktune.data.sites import SITE, names
from leuktune.data.sources import DataError

SPLITS = ("train", "val", "test")


def _most_common(values: pd.Series, by: pd.Series) -> pd.Series:
    return values.groupby(by).agg(lambda s: s.value_counts().index[0])


def deal(manifest: pd.DataFrame, fractions: dict[str, float], seed: int) -> pd.Series:
    """Each row's split, its group dealt whole (see the module's docstring)."""
    wanted = [s for s in fractions if fractions[s] > 0]
    rng = np.random.default_rng(seed)
    # A group's class is its most common label (patients carry one diagnosis); with several sites
    # it is dealt among its site's groups of that class (one site: the class alone, as always).
    group_label = _most_common(manifest["label"], manifest["group"])
    for label in sorted(group_label.unique()):
        if (group_label == label).sum() < len(wanted):
            raise DataError(
                f"class {label!r} has {(group_label == label).sum()} group(s) (patients or distinct images); the "
                f"split {'/'.join(wanted)} needs at least {len(wanted)}: add images or change data.split"
            )
    several = SITE in manifest and manifest[SITE].nunique() > 1
    stratum = (_most_common(manifest[SITE].astype(str), manifest["group"]) + "\0" + group_label) if several \
        else group_label
    group_size = manifest.groupby("group").size()
    assignment: dict[str, str] = {}
    for key in sorted(stratum.unique()):
        groups = np.array(sorted(stratum.index[stratum == key]))
        groups = groups[rng.permutation(len(groups))]
        total = group_size[groups].sum()
        filled = {s: 0 for s in wanted}
        # Give every split one group first, so no split lacks a class (a site's class may have fewer).
        for s, g in zip(wanted, groups):
            assignment[g] = s
            filled[s] += group_size[g]
        for g in groups[len(wanted):]:
            s = max(wanted, key=lambda s: fractions[s] * total - filled[s])
            assignment[g] = s
            filled[s] += group_size[g]
    return manifest["group"].map(assignment)


def check_test_sites(manifest: pd.DataFrame, test_sites: list[str]) -> None:
    """data.test_sites names sites of the data and leaves one to train on (a ConfigError otherwise)."""
    known = names(manifest)
    unknown = [s for s in test_sites if s not in known]
    if unknown:
        raise ConfigError(f"data.test_sites: {', '.join(unknown)} not a site of the data (known: {', '.join(known)})")
    if test_sites and set(known) <= set(test_sites):
        raise ConfigError(f"data.test_sites names every site ({', '.join(known)}): keep one to train on")


def leaving_test_groups(manifest: pd.DataFrame, test_sites: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Which rows stay (a mask): not the training-site images of groups that have an image at a test
    site; and those left out (path, label, site, error)."""
    if not test_sites:
        return np.ones(len(manifest), bool), pd.DataFrame(columns=["path", "label", SITE, "error"])
    at_test = manifest[SITE].isin(test_sites)
    leaks = (manifest["group"].isin(set(manifest.loc[at_test, "group"])) & ~at_test).to_numpy()
    test_site_of = manifest[at_test].drop_duplicates("group").set_index("group")[SITE]
    left = manifest.loc[leaks, ["path", "label", SITE]].assign(
        error=[f"its group {g!r} has images at test site {test_site_of[g]!r} (data.test_sites): left out of "
               "training and validation" for g in manifest.loc[leaks, "group"]])
    return ~leaks, left.reset_index(drop=True)


def assign_splits(manifest: pd.DataFrame, split: SplitConfig, test_sites: list[str] = ()) -> pd.DataFrame:
    out = manifest.copy()
    if test_sites:
        at_test = out[SITE].isin(test_sites)
        share = split.train + split.val
        out["split"] = "test"
        rest = out[~at_test]
        out.loc[rest.index, "split"] = deal(rest, {"train": split.train / share, "val": split.val / share},
                                            split.seed)
        return out
    if "split" in out and out["split"].notna().all():
        if "val" in set(out["split"]) or split.val == 0:
            return out
        train = out[out["split"] == "train"]
        out.loc[train.index, "split"] = deal(train, {"train": split.train, "val": split.val}, split.seed)
        return out
    out["split"] = deal(out, {"train": split.train, "val": split.val, "test": split.test}, split.seed)
    return out
