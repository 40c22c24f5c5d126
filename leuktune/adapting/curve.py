"""The curve: how a model does on a lab's held-out cells against how many labelled cells a class
adapted it (0: the model as the run holds it), with 95% bootstrap intervals resampling the lab's
groups, for the best trial and the ensemble. ``adapted/<name>/curve.parquet`` holds a row per
(``per_class``, model); ``table`` prints it as the command line shows it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leuktune.evaluation.bootstrap import intervals
from leuktune.metrics import classification_metrics

FIGURES = ("balanced_accuracy", "f1_macro")
COLUMNS = ["set", "per_class", "model", "role", "steps", "labelled", "unlabelled", "test",
           *[f"{m}{part}" for m in FIGURES for part in ("", "_low", "_high")],
           "cv_balanced_accuracy", "home_test_balanced_accuracy", "seconds", "location"]


def figures(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, *, resamples: int,
            seed: int) -> dict[str, float]:
    """Each figure of ``FIGURES`` with its 95% interval (``<figure>_low``, ``_high``)."""
    scores = classification_metrics(labels, probs)
    ci = intervals(labels, probs, groups, resamples=resamples, seed=seed)
    out = {}
    for metric in FIGURES:
        out.update({metric: float(scores[metric]), f"{metric}_low": ci[metric][0], f"{metric}_high": ci[metric][1]})
    return out


def table(curve: pd.DataFrame) -> str:
    """Balanced accuracy (95% interval) per model (rows) and labelled cells a class (columns)."""
    cells = curve.assign(figure=[f"{v:.3f} ({lo:.2f}-{hi:.2f})" for v, lo, hi in
                                 curve[["balanced_accuracy", "balanced_accuracy_low", "balanced_accuracy_high"]]
                                 .itertuples(index=False)])
    wide = cells.pivot_table(index=["set", "role", "model"], columns="per_class", values="figure", aggfunc="first")
    wide.columns = [f"{n} a class" if n else "unadapted" for n in wide.columns]
    home = curve.groupby(["set", "role", "model"])["home_test_balanced_accuracy"].first()
    wide["home test"] = [f"{v:.3f}" if v == v else "-" for v in home.reindex(wide.index)]
    return ("balanced accuracy on the lab's held-out cells (95% CI), by labelled cells a class\n"
            + wide.reset_index().to_string(index=False))
