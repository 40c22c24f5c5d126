"""A split's figures from its predictions: every metric of the table, one metric alone, the
confusion matrix, and all of them as the leaderboard names them."""

from __future__ import annotations

import warnings

import numpy as np

from leuktune.metrics.table import TABLE, Scored


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
        return {f"{prefix}{name}": float(compute(scored)) for name, (compute, _) in TABLE.items()}


def score(name: str, y_true: np.ndarray, probs: np.ndarray) -> float:
    """One metric of ``METRICS`` for one split (what ensemble selection asks hundreds of times).

    >>> score("accuracy", np.array([0, 1]), np.array([[0.9, 0.1], [0.6, 0.4]]))
    0.5
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(TABLE[name][0](Scored(np.asarray(y_true), np.asarray(probs))))


def confusion_matrix(y_true: np.ndarray, probs: np.ndarray) -> list[list[int]]:
    """Rows = true class, columns = predicted class, in class-id order; plain lists so the
    matrix travels through Ray reports and into Parquet as a nested list column. Counted here,
    not by scikit-learn: every trial's validation asks for it (see ``scores_and_errors``).

    >>> confusion_matrix(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]))
    [[1, 0], [1, 1]]
    """
    scored = Scored(np.asarray(y_true), np.asarray(probs))
    k = scored.probs.shape[1]
    return np.bincount(scored.y_true.astype(np.int64) * k + scored.y_pred, minlength=k * k).reshape(k, k).tolist()


def split_scores(y_true: np.ndarray, probs: np.ndarray, split: str) -> dict:
    """A split's figures as the leaderboard names them: ``<split>_<metric>`` for every metric,
    ``<split>_confusion_matrix`` and ``<split>_images``."""
    return {**classification_metrics(y_true, probs, prefix=f"{split}_"),
            f"{split}_confusion_matrix": confusion_matrix(y_true, probs), f"{split}_images": len(y_true)}
