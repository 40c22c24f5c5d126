"""95% intervals for test metrics: resample the test set (whole groups, i.e. patients, where the
data has them, so that cells of one patient move together) and read the percentiles."""

from __future__ import annotations

import numpy as np

from leuktune.metrics import METRICS, classification_metrics, group_resamples, resampled


def intervals(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, *, resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """(low, high) per metric of ``leuktune.metrics.METRICS``. A resample that lacks a class
    leaves metrics such as ROC-AUC undefined; those resamples are left out of that metric."""
    counts = group_resamples(groups, resamples, np.random.default_rng(seed))
    tail = (1 - confidence) / 2 * 100
    out = {}
    for name, values in resampled(labels, probs, counts).items():
        finite = values[np.isfinite(values)]
        out[name] = (float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))) \
            if len(finite) else (np.nan, np.nan)
    return out


def metric_rows(trial_id: str, variant: str, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, /, *,
                resamples: int, seed: int, **extra) -> list[dict]:
    """One model's figures on one set of predictions as ``evaluation.parquet`` (and an external
    set's table) hold them: a row per metric of ``METRICS`` with its value and 95% interval
    (resampling ``groups``), ``extra`` columns on every row (positional arguments first, so that an
    extra column may be named ``groups``)."""
    scores = classification_metrics(labels, probs)
    ci = intervals(labels, probs, groups, resamples=resamples, seed=seed)
    return [{"trial_id": trial_id, "variant": variant, "metric": m, "value": scores[m], "low": ci[m][0],
             "high": ci[m][1], **extra} for m in METRICS]
