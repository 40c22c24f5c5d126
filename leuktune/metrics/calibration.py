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


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per confidence bin: mean confidence, accuracy and how many predictions fell in it."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else np.nan,
                     "accuracy": float((predicted[mask] == labels[mask]).mean()) if mask.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The gap between confidence and accuracy, averaged over bins weighted by their size."""
    table = reliability(probs, labels, bins)
    filled = table[table["count"] > 0]
    return float((filled["count"] * (filled["confidence"] - filled["accuracy"]).abs()).sum() / max(len(labels), 1))
