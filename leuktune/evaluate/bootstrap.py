"""95% intervals for test metrics: resample the test set (whole groups, i.e. patients, where the
data has them, so that cells of one patient move together) and read the percentiles."""

from __future__ import annotations

import numpy as np

from leuktune.metrics import resampled


def intervals(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, *, resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """(low, high) per metric of ``leuktune.metrics.METRICS``. A resample that lacks a class
    leaves metrics such as ROC-AUC undefined; those resamples are left out of that metric."""
    rng = np.random.default_rng(seed)
    unique, members = np.unique(groups, return_inverse=True)
    n = len(unique)
    groups_drawn = rng.multinomial(n, np.full(n, 1 / n), size=resamples)  # (B, G): how often each group is drawn
    tail = (1 - confidence) / 2 * 100
    out = {}
    for name, values in resampled(labels, probs, groups_drawn[:, members]).items():
        finite = values[np.isfinite(values)]
        out[name] = (float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))) \
            if len(finite) else (np.nan, np.nan)
    return out
