"""Patient-level results: one prediction per group (a patient, where the data names them) from
its images' probabilities, and the metrics over groups with intervals from resampling groups.

A clinician decides per patient, not per cell; C-NMC's subjects each hold hundreds of cells of
one label. Where every group is a single image (the data names no patients), or a group holds
images of several labels, there is no patient-level figure, and ``why_not`` says why.

>>> labels, groups = np.array([0, 0, 1, 1, 1]), np.array(["p1", "p1", "p2", "p2", "p3"])
>>> probs = np.array([[.9, .1], [.4, .6], [.3, .7], [.2, .8], [.6, .4]])
>>> group_labels, group_probs = by_group(labels, probs, groups)
>>> group_labels.tolist(), group_probs.argmax(axis=1).tolist()
([0, 1, 1], [0, 1, 0])
>>> why_not(labels, np.array(["a", "b", "c", "d", "e"]))
'every group is a single image (the data names no patients)'
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leuktune.evaluation.bootstrap import metric_rows

VARIANT = "patient"  # evaluation.parquet's variant for patient-level figures


def why_not(labels: np.ndarray, groups: np.ndarray) -> str | None:
    """Why these test images give no patient-level figures; None when they do."""
    frame = pd.DataFrame({"label": labels, "group": groups})
    if frame.groupby("group").size().max() < 2:
        return "every group is a single image (the data names no patients)"
    mixed = frame.groupby("group")["label"].nunique()
    if (mixed > 1).any():
        return (f"{int((mixed > 1).sum())} group(s) hold images of several classes (e.g. {mixed[mixed > 1].index[0]}), "
                "so a group has no one true class")
    return None


def by_group(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each group's class, the mean of its images' probabilities), groups in sorted order."""
    names, which = np.unique(groups, return_inverse=True)
    counts = np.bincount(which, minlength=len(names))
    summed = np.zeros((len(names), probs.shape[1]))
    np.add.at(summed, which, probs)
    group_labels = np.zeros(len(names), dtype=labels.dtype)
    group_labels[which] = labels
    return group_labels, summed / counts[:, None]


def patient_figures(trial_id: str, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, *,
                    resamples: int, seed: int) -> tuple[list[dict], str]:
    """evaluation.parquet rows of the patient-level metrics (with 95% intervals from resampling
    patients), and a line saying what they are or why there are none."""
    reason = why_not(labels, groups)
    if reason is not None:
        return [], f"no patient-level figures: {reason}"
    group_labels, group_probs = by_group(labels, probs, groups)
    rows = metric_rows(trial_id, VARIANT, group_labels, group_probs, np.arange(len(group_labels)),
                       resamples=resamples, seed=seed, groups=len(group_labels))
    balanced = next(r for r in rows if r["metric"] == "balanced_accuracy")
    return rows, (f"patient level ({len(group_labels)} patients, the mean of each one's image probabilities): "
                  f"balanced accuracy {balanced['value']:.4f} (95% CI {balanced['low']:.4f}-{balanced['high']:.4f})")
