"""Which trials the validation split cannot tell from the top: each trial's search metric minus
the top's, on the same validation images (the same folds under ``search.cv``), resampled
together (a paired bootstrap, whole patients where the data names them); a trial is tied with
the top where the 95% interval of that difference holds 0.

Two trials scored on the same images share most of their luck: an image both get wrong moves
both scores alike. A band of one standard error around the top ignores that: a trial 0.017
behind a top whose standard error is 0.013 falls outside it, though the two may disagree on a
handful of images only, each way, well within the difference's noise; and a trial wrong on the
top's mistakes and a few more is surely worse, though within the band. Runs whose checkpoints keep
no validation predictions (an earlier leuktune's) are judged by that band still, and say so
(``tied_by``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from leuktune.leaderboard.ranking import ranked
from leuktune.metrics import METRICS, WORST, group_resamples, mode, of_worst, resampled
from leuktune.results import FAILED

RESAMPLES = 1000  # a 95% interval's tails need about a thousand (the final evaluation's count)
CONFIDENCE = 0.95
PAIRED = "paired_bootstrap"  # tied_by: the paired bootstrap of the difference
BAND = "standard_error"  # tied_by: within the top's standard error (no stored predictions)


@dataclass(frozen=True)
class ValPredictions:
    """One model's class probabilities on the validation images at a trial's kept epoch, with
    each image's dataset row, class and group (codes: patients, or each image its own): what a
    paired comparison of two trials needs. Rows ascending, probabilities float16 (a few bytes per
    image: the checkpoint keeps them beside its weights)."""

    rows: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    probs: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, probs: np.ndarray) -> ValPredictions:
        """In a canonical order (by dataset row), whatever order the workers gathered them in.

        >>> p = ValPredictions.of(np.array([7, 3]), np.array([1, 0]), np.array(["p2", "p1"]),
        ...                       np.array([[0.2, 0.8], [0.9, 0.1]]))
        >>> p.rows.tolist(), p.labels.tolist(), p.groups.tolist(), p.probs.dtype.name
        ([3, 7], [0, 1], [0, 1], 'float16')
        """
        order = np.argsort(np.asarray(rows), kind="stable")
        codes = (np.arange(len(order)) if groups is None
                 else np.unique(np.asarray(groups)[order], return_inverse=True)[1])
        return cls(np.asarray(rows, np.int64)[order], np.asarray(labels, np.int64)[order], codes.astype(np.int64),
                   np.asarray(probs, np.float16)[order])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"rows": self.rows, "labels": self.labels, "groups": self.groups, "probs": self.probs}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ValPredictions:
        return cls(*(np.asarray(arrays[name]) for name in ("rows", "labels", "groups", "probs")))


@dataclass(frozen=True)
class Resampled:
    """A trial's search metric on bootstrap resamples of its validation images that every trial
    scored on the same images draws alike (the draws depend only on the images and their groups),
    so that two trials' values subtract resample by resample."""

    images: str  # which images (a digest of each fold's rows): only trials on the same ones pair
    count: int  # validation images, all folds together
    units: int  # what was resampled: groups (patients), or images where the data names none
    values: np.ndarray  # (resamples,): the metric, the mean over folds of a cross-validated trial


def resample(folds: Sequence[ValPredictions], metric: str, *, resamples: int = RESAMPLES,
             seed: int = 0) -> Resampled | None:
    """``metric`` (``val_balanced_accuracy``, ...) of a trial's kept epoch on shared resamples of
    each fold's images (the mean over folds; a ``_worst`` metric, the worst held-out site's in each
    resample); None for a metric that is not a classification metric (a cost)."""
    name = of_worst(metric).removeprefix("val_")
    if name not in METRICS or not folds:
        return None
    per_fold, digest = [], hashlib.sha256()
    for fold, p in enumerate(folds):
        counts = group_resamples(p.groups, resamples, np.random.default_rng([seed, fold]))
        per_fold.append(resampled(p.labels, p.probs.astype(np.float64), counts, (name,))[name])
        digest.update(p.rows.tobytes() + p.groups.tobytes() + b"|")
    worst = np.min if mode(name) == "max" else np.max
    values = worst(per_fold, axis=0) if metric.endswith(WORST) else np.sum(per_fold, axis=0) / len(folds)
    return Resampled(digest.hexdigest()[:16], sum(len(p.rows) for p in folds),
                     sum(int(p.groups.max()) + 1 if len(p.groups) else 0 for p in folds), values)


def difference_interval(top: Resampled, other: Resampled,
                        confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The interval of ``other``'s metric minus ``top``'s; None when they were not scored on the
    same images (nothing to pair)."""
    if top.images != other.images:
        return None
    difference = other.values - top.values
    finite = difference[np.isfinite(difference)]  # a resample without a class leaves ROC-AUC undefined
    if not len(finite):
        return None
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))


def ties(board: pd.DataFrame, metric: str, mode: str,
         resampled_by_trial: Mapping[str, Resampled | None] | None = None) -> pd.DataFrame:
    """The search table's tie columns for every row: ``tied_with_top``, ``tied_by`` (``PAIRED``
    or ``BAND``), ``top_difference_low``/``_high`` (the interval of the trial's metric minus the
    top's) and ``tie_units`` (the groups or images resampled). A trial and the top that both have
    ``resampled_by_trial`` entries on the same images are judged by the paired interval; others
    by the band of the top's standard error (``<metric>_se``). Null for failed trials, and where
    neither can judge (a cost objective, a table from before standard errors)."""
    resampled_by_trial = resampled_by_trial or {}
    out = pd.DataFrame({"tied_with_top": pd.Series(None, index=board.index, dtype="object"),
                        "tied_by": pd.Series(None, index=board.index, dtype="object"),
                        "top_difference_low": np.nan, "top_difference_high": np.nan,
                        "tie_units": pd.Series(None, index=board.index, dtype="object")}, index=board.index)
    trials = board[~board["status"].isin(FAILED)]
    if metric not in board or trials[metric].notna().sum() == 0:
        return out
    top = ranked(trials, metric, mode).iloc[0]
    top_draws = resampled_by_trial.get(top["trial_id"])
    band = f"{metric}_se"
    for index, row in trials.iterrows():
        draws = resampled_by_trial.get(row["trial_id"])
        interval = difference_interval(top_draws, draws) if top_draws is not None and draws is not None else None
        if interval is not None:
            low, high = interval
            out.loc[index, ["tied_with_top", "tied_by", "top_difference_low", "top_difference_high", "tie_units"]] = \
                [bool(low <= 0 <= high), PAIRED, low, high, top_draws.units]
        elif band in board and pd.notna(top[band]):
            # a hair of slack: a float sum that lands exactly one standard error away counts as within it
            # (a trial without a score compares as NaN: not within)
            out.loc[index, ["tied_with_top", "tied_by"]] = [bool(abs(row[metric] - top[metric]) <= top[band] + 1e-12),
                                                            BAND]
    return out


def tied_with_top(board: pd.DataFrame, metric: str, mode: str,
                  resampled_by_trial: Mapping[str, Resampled | None] | None = None) -> pd.Series:
    """``ties``' verdict alone: True for a trial the validation split cannot tell from the top
    (the top itself included), False for the others, null for failed trials. Without stored
    predictions, a trial within the top's standard error of the top is tied:

    >>> board = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["completed"] * 3,
    ...                       "val_balanced_accuracy": [0.98, 0.96, 0.90],
    ...                       "val_balanced_accuracy_se": [0.02, 0.03, 0.04]})
    >>> tied_with_top(board, "val_balanced_accuracy", "max").tolist()
    [True, True, False]
    """
    return ties(board, metric, mode, resampled_by_trial)["tied_with_top"]
