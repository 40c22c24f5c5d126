"""Folds of the training and validation images, for a search that chooses by cross-validation
(``search.cv``).

On a small set one validation split of 50 images ranks trials by noise: one image moves a
balanced accuracy by 0.02. With ``search.cv: K`` each trial trains K models, fold f holding out
the f-th part of the training and validation images and training on the rest; its score is the
mean over folds. The test split is never in a fold. A group (a patient, or images joined as
identical or near-identical) stays in one fold, and each fold holds each class about as the whole
does (scikit-learn's ``StratifiedGroupKFold``).

A fold is the run's ``CachedDataset`` with other split codes: the same pixels, shared through the
object store once, and the same fingerprint, since the folds follow from the data, K and the
split seed alone (``cv_folds`` deals them again, identically, wherever it is asked).

``search.cv: sites`` deals one fold per training site instead (``site_folds``): the fold validates
on that lab's images and trains on the other labs', so a trial is judged on labs it never saw.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from leuktune.config import ConfigError
from leuktune.config.search import SITES
from leuktune.data.cache import SPLITS, CachedDataset
from leuktune.data.files import DataError

# search.cv: auto chooses by cross-validation below this many training and validation images.
# bench selection (3 seeds, 6 trials): five folds chose better on test than one validation split
# at 271, 657 and 2,555 training and validation images (+0.014, +0.008, +0.047 balanced accuracy
# over keeping the last epoch), at 5-6x the trial-seconds; larger sets were not measured.
AUTO_BELOW = 3000
AUTO_FOLDS = 5
# A fold's split code for the rows it neither trains nor validates on: under search.cv: sites, the
# other sites' images of a group (a patient, identical or near-identical images) that the held-out
# site also has. Not a split of the run: only a fold's copy has it.
LEFT_OUT = len(SPLITS)


def pooled(data: CachedDataset) -> np.ndarray:
    """The rows folds are dealt from: the training and validation images (never the test split)."""
    return np.flatnonzero(data.splits != SPLITS.index("test"))


def _groups(data: CachedDataset) -> np.ndarray:
    return data.groups if data.groups is not None else np.arange(len(data.labels))


def groups_per_class(data: CachedDataset) -> dict[str, int]:
    """How many groups of each class the training and validation splits hold (what folds are dealt from)."""
    rows = pooled(data)
    groups, labels = _groups(data)[rows], data.labels[rows]
    return {name: len(np.unique(groups[labels == c])) for c, name in enumerate(data.class_names)}


def check_folds(data: CachedDataset, k: int) -> None:
    """A DataError, naming the class and its count, when a class has fewer groups than folds:
    some fold would have none of it to validate on. It suggests the most folds the data allows
    (at least 2), or none when a class has fewer than 2 groups."""
    counts = groups_per_class(data)
    short = {name: n for name, n in counts.items() if n < k}
    if short:
        name, n = min(short.items(), key=lambda item: item[1])
        fewest = min(counts.values())
        instead = (f"set search.cv to at most {fewest}, or off" if fewest >= 2 else
                   "no number of folds can hold it (at least 2 are needed): set search.cv off")
        raise DataError(f"search.cv {k}: class {name!r} has {n} group(s) (patients, or images where the data names "
                        f"none) in the training and validation splits, fewer than the {k} folds, each of which must "
                        f"hold some of it; {instead}")


def resolve(cv: int | str | None, data: CachedDataset) -> int | str | None:
    """``search.cv`` as a number of folds, ``sites``, or None: ``auto`` is ``AUTO_FOLDS`` below
    ``AUTO_BELOW`` training and validation images (fewer where a class has fewer groups, as
    ``check_folds`` counts them), else off."""
    if cv != "auto":
        return cv
    if len(pooled(data)) >= AUTO_BELOW:
        return None
    fewest = min(groups_per_class(data).values())
    return min(AUTO_FOLDS, fewest) if fewest >= 2 else None


def cv_folds(data: CachedDataset, k: int, seed: int) -> list[CachedDataset]:
    """K copies of ``data``: in copy f, the f-th fold of the training and validation images is the
    validation split and the rest the training split; the test split as it was.

    >>> from leuktune.data.cache import CachedDataset
    >>> labels = np.repeat([0, 1], 10)
    >>> data = CachedDataset(images=np.zeros((20, 2, 2, 3), np.uint8), labels=labels,
    ...                      splits=np.array([0] * 8 + [1] * 2 + [0] * 8 + [1] * 2, np.int8),
    ...                      class_names=("ALL", "healthy"), fingerprint="f", groups=np.arange(20) // 2)
    >>> folds = cv_folds(data, 5, seed=0)
    >>> [int((f.splits == 1).sum()) for f in folds]  # each fold validates on 4 images, 2 patients
    [4, 4, 4, 4, 4]
    """
    # scikit-learn only where folds are dealt: every trial process imports this module (training.folds),
    # and the import costs a second of its start where search.cv is off
    from sklearn.model_selection import StratifiedGroupKFold

    check_folds(data, k)
    rows = pooled(data)
    dealer = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for _, held in dealer.split(np.zeros(len(rows)), data.labels[rows], _groups(data)[rows]):
        splits = data.splits.copy()
        splits[rows] = SPLITS.index("train")
        splits[rows[held]] = SPLITS.index("val")
        folds.append(dataclasses.replace(data, splits=splits))
    return folds


def training_sites(data: CachedDataset) -> list[str]:
    """The sites with training or validation images, in the data's order (a test site has none)."""
    if data.sites is None:
        return list(data.site_names)
    held = set(data.sites[pooled(data)].tolist())
    return [name for code, name in enumerate(data.site_names) if code in held]


def check_sites(data: CachedDataset) -> None:
    """A ConfigError naming the sites found when fewer than two can be held out (search.cv: sites)."""
    found = training_sites(data)
    if len(found) < 2:
        tested = [s for s in data.site_names if s not in found]
        raise ConfigError(f"search.cv sites holds out one training site per fold and trains on the others: it needs "
                          f"at least two training sites; the data has {', '.join(found) or 'none'}"
                          + (f" (and test site(s) {', '.join(tested)})" if tested else "")
                          + "; add labs (data.sites, or a csv's site column), or set search.cv to a number of folds")


def site_folds(data: CachedDataset) -> list[CachedDataset]:
    """One copy of ``data`` per training site (``training_sites``' order): in the copy of site s,
    every training and validation image of s is the validation split and the other sites' are the
    training split; the test split as it was.

    The held-out lab is validated on whole, its train and val rows alike: a lab the model never
    saw is what the fold measures, and a row of it trained on elsewhere would show the lab's look
    to the model (its val rows alone would leave its train rows idle). A group that also has images
    at other sites (``leuktune.data.sites.spanning_groups``) keeps those out of the fold's training
    (``LEFT_OUT``): the same patient or image on both sides would flatter the held-out score.

    >>> from leuktune.data.cache import CachedDataset
    >>> data = CachedDataset(images=np.zeros((6, 2, 2, 3), np.uint8), labels=np.array([0, 1] * 3),
    ...                      splits=np.array([0, 1, 0, 1, 2, 2], np.int8), class_names=("ALL", "healthy"),
    ...                      fingerprint="f", groups=np.array([0, 1, 2, 0, 4, 5]), site_names=("a", "b", "c"),
    ...                      sites=np.array([0, 0, 1, 1, 2, 2]))
    >>> [f.splits.tolist() for f in site_folds(data)]  # c is the test site; group 0 is at a and b
    [[1, 1, 0, 3, 2, 2], [3, 0, 1, 1, 2, 2]]
    """
    check_sites(data)
    rows, groups = pooled(data), _groups(data)
    folds = []
    for name in training_sites(data):
        held = rows[data.sites[rows] == data.site_names.index(name)]
        splits = data.splits.copy()
        splits[rows] = SPLITS.index("train")
        splits[rows[np.isin(groups[rows], groups[held])]] = LEFT_OUT
        splits[held] = SPLITS.index("val")
        folds.append(dataclasses.replace(data, splits=splits))
    return folds


def dealt(data: CachedDataset, cv: int | str, seed: int) -> list[CachedDataset]:
    """The folds of a resolved ``search.cv``: one per training site (``sites``), or K dealt by ``cv_folds``."""
    return site_folds(data) if cv == SITES else cv_folds(data, cv, seed)
