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
"""

from __future__ import annotations

import dataclasses

import numpy as np

from leuktune.data.cache import SPLITS, CachedDataset
from leuktune.data.files import DataError

# search.cv: auto chooses by cross-validation below this many training and validation images.
# bench selection (3 seeds, 6 trials): five folds chose better on test than one validation split
# at 271, 657 and 2,555 training and validation images (+0.014, +0.008, +0.047 balanced accuracy
# over keeping the last epoch), at 5-6x the trial-seconds; larger sets were not measured.
AUTO_BELOW = 3000
AUTO_FOLDS = 5


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


def resolve(cv: int | str | None, data: CachedDataset) -> int | None:
    """``search.cv`` as a number of folds, or None: ``auto`` is ``AUTO_FOLDS`` below ``AUTO_BELOW``
    training and validation images (fewer where a class has fewer groups, as ``check_folds``
    counts them), else off."""
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
