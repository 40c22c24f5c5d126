"""The classification metrics: one table that names them, says which way is better, and
computes them (with scikit-learn, so they match what reviewers recompute).

Everything else reads this table: the schema's choice of search metric and its direction,
the per-epoch validation scores, the leaderboard's ``val_*``/``test_*`` columns.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Scored:
    """One split's predictions: true classes, predicted classes, probabilities (N, classes)."""

    y_true: np.ndarray
    probs: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def labels(self) -> np.ndarray:
        return np.arange(self.probs.shape[1])


def _skm():
    # scikit-learn loads in about a second; reading a config only needs the names below.
    from sklearn import metrics

    return metrics


def _calibration():
    # it imports pandas for the reliability diagram's table; reading a config needs neither
    from leuktune.metrics import calibration

    return calibration


def _averaged(score: str, average: str) -> Callable[[Scored], float]:
    def compute(s: Scored) -> float:
        return getattr(_skm(), score)(s.y_true, s.y_pred, average=average, labels=s.labels, zero_division=0)
    return compute


def _roc_auc(s: Scored) -> float:
    """One-vs-rest ROC-AUC; NaN when a class is missing from the split (AUC is undefined there)."""
    if len(np.unique(s.y_true)) < s.probs.shape[1]:
        return math.nan
    if s.probs.shape[1] == 2:
        return _skm().roc_auc_score(s.y_true, s.probs[:, 1])
    return _skm().roc_auc_score(s.y_true, s.probs, multi_class="ovr", labels=s.labels)


# name -> (compute, higher is better)
_TABLE: dict[str, tuple[Callable[[Scored], float], bool]] = {
    "accuracy": (lambda s: _skm().accuracy_score(s.y_true, s.y_pred), True),
    "balanced_accuracy": (lambda s: _skm().balanced_accuracy_score(s.y_true, s.y_pred), True),
    "f1_macro": (_averaged("f1_score", "macro"), True),
    "f1_weighted": (_averaged("f1_score", "weighted"), True),
    "precision_macro": (_averaged("precision_score", "macro"), True),
    "precision_weighted": (_averaged("precision_score", "weighted"), True),
    "recall_macro": (_averaged("recall_score", "macro"), True),
    "recall_weighted": (_averaged("recall_score", "weighted"), True),
    "roc_auc": (_roc_auc, True),
    "loss": (lambda s: _skm().log_loss(s.y_true, np.clip(s.probs, 1e-7, 1), labels=s.labels), False),
    # expected calibration error: how far confidence is from accuracy (the validation loss's tie-break)
    "ece": (lambda s: _calibration().expected_calibration_error(s.probs, s.y_true), False),
}

# Every trial reports these on its validation split, the final evaluation on the test split.
METRICS: tuple[str, ...] = tuple(_TABLE)

# What a multi-objective search may also weigh against a val_* metric: the model's size and its
# inference time per image (validation forward passes, in milliseconds); smaller is better.
COSTS = ("params", "trainable_params", "inference_ms")
OBJECTIVES: tuple[str, ...] = (*(f"val_{m}" for m in METRICS), *COSTS)


def mode(metric: str) -> str:
    """'max' or 'min' for a metric or cost, with or without its split prefix.

    >>> mode("val_loss"), mode("test_f1_macro"), mode("params")
    ('min', 'max', 'min')
    """
    if metric in COSTS:
        return "min"
    name = metric.split("_", 1)[1] if metric.startswith(("val_", "test_")) else metric
    return "max" if _TABLE[name][1] else "min"


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Every metric of ``METRICS`` for one split; ``probs`` is (N, num_classes).

    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> scores = classification_metrics(np.array([0, 1, 1]), probs, prefix="val_")
    >>> round(scores["val_accuracy"], 3), scores["val_balanced_accuracy"]
    (0.667, 0.75)
    """
    scored = Scored(np.asarray(y_true), np.asarray(probs))
    with warnings.catch_warnings():
        # A class absent from a small validation split is a fact to report, not to warn about per epoch.
        warnings.simplefilter("ignore")
        return {f"{prefix}{name}": float(compute(scored)) for name, (compute, _) in _TABLE.items()}


def score(name: str, y_true: np.ndarray, probs: np.ndarray) -> float:
    """One metric of ``METRICS`` for one split (what ensemble selection asks hundreds of times).

    >>> score("accuracy", np.array([0, 1]), np.array([[0.9, 0.1], [0.6, 0.4]]))
    0.5
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_TABLE[name][0](Scored(np.asarray(y_true), np.asarray(probs))))


def confusion_matrix(y_true: np.ndarray, probs: np.ndarray) -> list[list[int]]:
    """Rows = true class, columns = predicted class, in class-id order; plain lists so the
    matrix travels through Ray reports and into Parquet as a nested list column."""
    scored = Scored(np.asarray(y_true), np.asarray(probs))
    return _skm().confusion_matrix(scored.y_true, scored.y_pred, labels=scored.labels).tolist()


def split_scores(y_true: np.ndarray, probs: np.ndarray, split: str) -> dict:
    """A split's figures as the leaderboard names them: ``<split>_<metric>`` for every metric,
    ``<split>_confusion_matrix`` and ``<split>_images``."""
    return {**classification_metrics(y_true, probs, prefix=f"{split}_"),
            f"{split}_confusion_matrix": confusion_matrix(y_true, probs), f"{split}_images": len(y_true)}


def resampled(y_true: np.ndarray, probs: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``METRICS`` for many resamples of one split at once.

    ``counts[b, i]`` is how many times row i is drawn in resample b. The figures are those
    ``classification_metrics`` gives on the resampled rows (a test checks they agree), computed
    from per-resample confusion matrices and weighted sums, so a thousand-resample bootstrap
    takes a fraction of a second where calling scikit-learn each time takes tens of seconds."""
    y_true = np.asarray(y_true)
    counts = np.asarray(counts, dtype=np.float64)
    classes = probs.shape[1]
    pairs = np.eye(classes * classes)[y_true * classes + probs.argmax(axis=1)]  # (N, K*K)
    confusion = (counts @ pairs).reshape(len(counts), classes, classes)  # rows = true class
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted, total = confusion.sum(axis=2), confusion.sum(axis=1), counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / support, 0.0)
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        share = support / total[:, None]
        present = support > 0
        out = {
            "accuracy": hits.sum(axis=1) / total,
            "balanced_accuracy": np.where(present, recall, 0).sum(axis=1) / present.sum(axis=1),
            "f1_macro": f1.mean(axis=1), "f1_weighted": (f1 * share).sum(axis=1),
            "precision_macro": precision.mean(axis=1), "precision_weighted": (precision * share).sum(axis=1),
            "recall_macro": recall.mean(axis=1), "recall_weighted": (recall * share).sum(axis=1),
        }
    true_prob = np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1)
    out["loss"] = (counts @ -np.log(true_prob)) / total
    ovr = [_weighted_auc(y_true == k, probs[:, k], counts) for k in range(classes)]
    auc = ovr[1] if classes == 2 else np.mean(ovr, axis=0)
    out["roc_auc"] = np.where(present.all(axis=1), auc, np.nan)  # undefined where a class is missing
    out["ece"] = _calibration().binned_calibration_error(probs, y_true, counts)
    return {name: out[name] for name in METRICS}


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC-AUC of ``scores`` for each row of weights: the chance a drawn positive outscores a drawn
    negative, ties counting half (Mann-Whitney). The rows sorted once, the weights summed per
    distinct score: (B, N) memory, so every validation of a large split can afford it."""
    order = np.argsort(scores, kind="stable")
    ordered, positive, counts = scores[order], positive[order], counts[:, order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # where each distinct score begins
    pos = np.add.reduceat(counts * positive, starts, axis=1)  # (B, U)
    neg = np.add.reduceat(counts * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each score
    with np.errstate(divide="ignore", invalid="ignore"):
        return (pos * (below + neg / 2)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def group_resamples(groups: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``counts[b, i]``, how often row i is drawn in bootstrap resample b, drawing whole groups
    (patients): the rows of one group move together, as ``resampled`` takes them."""
    unique, members = np.unique(groups, return_inverse=True)
    n = len(unique)
    return rng.multinomial(n, np.full(n, 1 / n), size=resamples)[:, members]


# A standard error needs far fewer resamples than a 95% interval's tails (its own error is about
# 1/sqrt(2B) of it: 5% at 200), and every trial pays for it at each validation.
SE_RESAMPLES = 200


def standard_errors(y_true: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None, *,
                    resamples: int = SE_RESAMPLES, seed: int = 0) -> dict[str, float]:
    """The bootstrap standard error of every metric of ``METRICS`` on one split: how far each
    figure would move on another draw of as many images (or patients, where ``groups`` names
    them) from the same source. On a validation split of 52 images a balanced accuracy moves in
    steps of about 0.02, and two trials closer than their standard error are not told apart.

    >>> y = np.array([0, 1] * 50)
    >>> probs = np.eye(2)[np.where(np.arange(100) < 90, y, 1 - y)]  # 90 of 100 right
    >>> round(standard_errors(y, probs)["accuracy"], 2)  # sqrt(0.9 * 0.1 / 100) = 0.03
    0.03
    """
    groups = np.arange(len(y_true)) if groups is None else np.asarray(groups)
    counts = group_resamples(groups, resamples, np.random.default_rng(seed))
    return {name: float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else math.nan
            for name, values in resampled(y_true, probs, counts).items()}
