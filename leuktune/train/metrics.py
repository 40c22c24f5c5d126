"""Classification metrics, computed by scikit-learn so they match what reviewers recompute."""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, prefix: str = "") -> dict[str, float]:
    """The METRICS of leuktune.config for one split; ``probs`` is (N, num_classes)."""
    num_classes = probs.shape[1]
    y_pred = probs.argmax(axis=1)
    labels = np.arange(num_classes)
    with warnings.catch_warnings():
        # A class absent from a small validation split is a fact to report, not to warn about per epoch.
        warnings.simplefilter("ignore")
        out = {
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
            "f1_macro": skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0),
            "f1_weighted": skm.f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0),
            "precision_macro": skm.precision_score(y_true, y_pred, average="macro", labels=labels, zero_division=0),
            "precision_weighted": skm.precision_score(y_true, y_pred, average="weighted", labels=labels,
                                                      zero_division=0),
            "recall_macro": skm.recall_score(y_true, y_pred, average="macro", labels=labels, zero_division=0),
            "recall_weighted": skm.recall_score(y_true, y_pred, average="weighted", labels=labels,
                                                zero_division=0),
            "roc_auc": _roc_auc(y_true, probs),
            "loss": skm.log_loss(y_true, np.clip(probs, 1e-7, 1), labels=labels),
        }
    return {f"{prefix}{k}": float(v) for k, v in out.items()}


def _roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest ROC-AUC; NaN when a class is missing (AUC is undefined there)."""
    if len(np.unique(y_true)) < probs.shape[1]:
        return math.nan
    if probs.shape[1] == 2:
        return skm.roc_auc_score(y_true, probs[:, 1])
    return skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=np.arange(probs.shape[1]))


def confusion_matrix(y_true: np.ndarray, probs: np.ndarray) -> list[list[int]]:
    """Rows = true class, columns = predicted class, in class-id order; plain lists so the
    matrix travels through Ray reports and into Parquet as a nested list column."""
    labels = np.arange(probs.shape[1])
    return skm.confusion_matrix(y_true, probs.argmax(axis=1), labels=labels).tolist()
