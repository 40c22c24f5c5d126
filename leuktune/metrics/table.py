"""The metric table: each classification metric's name, which way is better, and how it is
computed on one split (with scikit-learn, so the figures match what reviewers recompute).

>>> METRICS[:2], mode("val_loss"), mode("params")
(('accuracy', 'balanced_accuracy'), 'min', 'min')
"""

from __future__ import annotations

import math
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


def sklearn_metrics():
    """scikit-learn's ``sklearn.metrics``, imported when a figure is first computed."""
    # scikit-learn loads in about a second; reading a config only needs the names below.
    from sklearn import metrics

    return metrics


def calibration_module():
    """``leuktune.metrics.calibration``, imported when a calibration figure is first computed."""
    # it imports pandas for the reliability diagram's table; reading a config needs neither
    from leuktune.metrics import calibration

    return calibration


def _averaged(score: str, average: str) -> Callable[[Scored], float]:
    def compute(s: Scored) -> float:
        return getattr(sklearn_metrics(), score)(s.y_true, s.y_pred, average=average, labels=s.labels,
                                                 zero_division=0)
    return compute


def _roc_auc(s: Scored) -> float:
    """One-vs-rest ROC-AUC; NaN when a class is missing from the split (AUC is undefined there)."""
    if len(np.unique(s.y_true)) < s.probs.shape[1]:
        return math.nan
    if s.probs.shape[1] == 2:
        return sklearn_metrics().roc_auc_score(s.y_true, s.probs[:, 1])
    return sklearn_metrics().roc_auc_score(s.y_true, s.probs, multi_class="ovr", labels=s.labels)


# name -> (compute, higher is better)
TABLE: dict[str, tuple[Callable[[Scored], float], bool]] = {
    "accuracy": (lambda s: sklearn_metrics().accuracy_score(s.y_true, s.y_pred), True),
    "balanced_accuracy": (lambda s: sklearn_metrics().balanced_accuracy_score(s.y_true, s.y_pred), True),
    "f1_macro": (_averaged("f1_score", "macro"), True),
    "f1_weighted": (_averaged("f1_score", "weighted"), True),
    "precision_macro": (_averaged("precision_score", "macro"), True),
    "precision_weighted": (_averaged("precision_score", "weighted"), True),
    "recall_macro": (_averaged("recall_score", "macro"), True),
    "recall_weighted": (_averaged("recall_score", "weighted"), True),
    "roc_auc": (_roc_auc, True),
    "loss": (lambda s: sklearn_metrics().log_loss(s.y_true, np.clip(s.probs, 1e-7, 1), labels=s.labels), False),
    # expected calibration error: how far confidence is from accuracy (the validation loss's tie-break)
    "ece": (lambda s: calibration_module().expected_calibration_error(s.probs, s.y_true), False),
}

# Every trial reports these on its validation split, the final evaluation on the test split.
METRICS: tuple[str, ...] = tuple(TABLE)

# What a multi-objective search may also weigh against a val_* metric: the model's size and its
# inference time per image (validation forward passes, in milliseconds); smaller is better.
COSTS = ("params", "trainable_params", "inference_ms")
# A search that validates on held-out labs (search.cv: sites) also reports each metric at its worst
# site: val_<metric>_worst (the lowest balanced accuracy, the highest loss), what a model that must
# hold at every lab is chosen by.
WORST = "_worst"
OBJECTIVES: tuple[str, ...] = (*(f"val_{m}" for m in METRICS), *(f"val_{m}{WORST}" for m in METRICS), *COSTS)


def of_worst(metric: str) -> str:
    """The metric a worst-site figure is the worst of (``val_loss_worst`` -> ``val_loss``); any other as it is."""
    return metric.removesuffix(WORST)


def mode(metric: str) -> str:
    """'max' or 'min' for a metric or cost, with or without its split prefix.

    >>> mode("val_loss"), mode("test_f1_macro"), mode("params"), mode("val_balanced_accuracy_worst")
    ('min', 'max', 'min', 'max')
    """
    if metric in COSTS:
        return "min"
    metric = of_worst(metric)  # the worst site's figure goes the way its metric goes
    name = metric.split("_", 1)[1] if metric.startswith(("val_", "test_")) else metric
    return "max" if TABLE[name][1] else "min"
