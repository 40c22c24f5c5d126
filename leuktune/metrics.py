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
}

# Every trial reports these on its validation split, the final evaluation on the test split.
METRICS: tuple[str, ...] = tuple(_TABLE)

# What a multi-objective search may also weigh against a val_* metric: the model's size and its
# inference time per image (validation forward passes, in milliseconds); smaller is better.
COSTS = ("params", "trainable_params", "inference_ms")
OBJECTIVES: tuple[str, ...] = (*(f"val_{m}" for m in METRICS), *COSTS)


def mode(metric: str) -> str:
    """'max' or 'min' for a metric or cost, with or without its split prefix (val_loss -> min)."""
    if metric in COSTS:
        return "min"
    name = metric.split("_", 1)[1] if metric.startswith(("val_", "test_")) else metric
    return "max" if _TABLE[name][1] else "min"


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Every metric of ``METRICS`` for one split; ``probs`` is (N, num_classes)."""
    scored = Scored(np.asarray(y_true), np.asarray(probs))
    with warnings.catch_warnings():
        # A class absent from a small validation split is a fact to report, not to warn about per epoch.
        warnings.simplefilter("ignore")
        return {f"{prefix}{name}": float(compute(scored)) for name, (compute, _) in _TABLE.items()}


def confusion_matrix(y_true: np.ndarray, probs: np.ndarray) -> list[list[int]]:
    """Rows = true class, columns = predicted class, in class-id order; plain lists so the
    matrix travels through Ray reports and into Parquet as a nested list column."""
    scored = Scored(np.asarray(y_true), np.asarray(probs))
    return _skm().confusion_matrix(scored.y_true, scored.y_pred, labels=scored.labels).tolist()
