"""How far a model's probabilities can be trusted: expected calibration error, temperature
scaling fitted on the validation split, and the reliability diagram's bins."""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS = 15


def rescale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T), from probabilities: log p is the logits up to a per-row constant."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar  # SciPy takes 0.4 s to import; prediction only rescales

    def nll(log_t: float) -> float:
        scaled = rescale(probs, float(np.exp(log_t)))
        return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each prediction's confidence bin: ``bins`` equal widths of [0, 1], 1.0 in the last."""
    return np.minimum((confidence * bins).astype(int), bins - 1)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per confidence bin: mean confidence, accuracy and how many predictions fell in it."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    which = _bin_of(confidence, bins)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else np.nan,
                     "accuracy": float((predicted[mask] == labels[mask]).mean()) if mask.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The gap between confidence and accuracy, averaged over bins weighted by their size
    (the bins of ``reliability``; numpy only, as every trial computes it each validation).

    >>> probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    >>> round(expected_calibration_error(probs, np.array([0, 1, 1, 1])), 3)  # 0.9 sure, half right; 0.6, all
    0.4
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    counts = np.ones((1, len(labels)))
    return float(binned_calibration_error(probs, labels, counts)[0])


def binned_calibration_error(probs: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                             bins: int = BINS) -> np.ndarray:
    """The expected calibration error of many resamples at once: ``counts[b, i]`` is how many
    times row i is drawn in resample b (what the bootstrap and ``metrics.resampled`` need)."""
    confidence, right = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.eye(bins)[_bin_of(confidence, bins)]  # (N, bins)
    gap = counts @ (which * (confidence - right)[:, None])  # (B, bins): sum of confidence - accuracy
    return np.abs(gap).sum(axis=1) / np.maximum(counts.sum(axis=1), 1)
