"""Every evaluation by site (lab): a model that holds at one lab and fails at another is only seen
when each lab is scored on its own, and the leaderboard's ``test_<metric>_worst`` is the figure a
lab the model was not chosen on would get at worst.

The final evaluation's ``test_by_site.parquet`` and an external set's ``external/<name>.by_site.parquet``
hold the same rows (``leuktune.leaderboard.SITE_FIGURES``): a row per model and site, each metric
with its 95% interval (resampling that site's groups, as the whole split's interval does), the
confusion matrix and the classes of the model the site has no image of. A site is scored on the
classes it has: balanced accuracy is the mean recall over the classes present there (a class
absent at a site has no recall to average), which the console and the report say in one line.

>>> labels, probs = np.array([0, 0, 1, 0]), np.eye(3)[[0, 1, 1, 0]]
>>> rows = site_figures("t", labels, probs, np.arange(4), np.array(["a", "a", "a", "b"]), ("x", "y", "z"),
...                     resamples=50, seed=0)
>>> [(r["site"], r["images"], round(r["balanced_accuracy"], 2), r["classes_absent"]) for r in rows]
[('a', 3, 0.75, ['z']), ('b', 1, 1.0, ['y', 'z'])]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leuktune.config import ExperimentConfig
from leuktune.config.data import DataConfig
from leuktune.data.sites import SITE, default_name
from leuktune.evaluation.bootstrap import metric_rows
from leuktune.metrics import confusion_matrix


def site_of(table: pd.DataFrame, rows: np.ndarray, data: DataConfig) -> np.ndarray:
    """The site of each of ``rows`` of a split table (or manifest); a table written before sites were
    part of the data has one, named as ``leuktune.data.sites.default_name`` names it today."""
    if SITE in table:
        return table[SITE].astype(str).to_numpy()[rows]
    return np.full(len(rows), default_name(data), dtype=object)


def site_figures(model: str, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, sites: np.ndarray,
                 classes: tuple[str, ...] | list[str], *, resamples: int, seed: int) -> list[dict]:
    """A row of ``SITE_FIGURES`` per site of ``sites`` (in the order they first appear) for one
    model's predictions: its metrics on that site's images alone, their 95% intervals resampling
    that site's ``groups``, its confusion matrix and the ``classes`` it has no image of."""
    out = []
    for site in dict.fromkeys(np.asarray(sites).tolist()):
        at = np.asarray(sites) == site
        scored = metric_rows(model, "site", labels[at], probs[at], groups[at], resamples=resamples, seed=seed)
        present = set(labels[at].tolist())
        out.append({"trial_id": model, "site": str(site), "images": int(at.sum()),
                    "classes_absent": [c for k, c in enumerate(classes) if k not in present],
                    **{r["metric"]: r["value"] for r in scored},
                    **{f"{r['metric']}_{end}": r[end] for r in scored for end in ("low", "high")},
                    "confusion_matrix": confusion_matrix(labels[at], probs[at])})
    return out


def from_predictions(predicted: pd.DataFrame, groups: np.ndarray, classes: tuple[str, ...],
                     cfg: ExperimentConfig) -> list[dict]:
    """``site_figures`` of one model's rows of a predictions table (trial_id, label, probs, site),
    ``groups`` the groups of those rows."""
    return site_figures(str(predicted["trial_id"].iloc[0]), predicted["label"].to_numpy(),
                        np.stack(predicted["probs"].to_numpy()), np.asarray(groups), predicted[SITE].to_numpy(),
                        classes, resamples=cfg.evaluate.bootstrap, seed=cfg.data.split.seed)


def several(rows: list[dict]) -> bool:
    """Whether figures by site say more than the whole set's: two or more sites."""
    return len({r["site"] for r in rows}) > 1


def model_line(rows: list[dict], where: str) -> str:
    """One model's balanced accuracy at each site (95% interval) and its worst site, as the console says it."""
    figures = ", ".join(f"{r['site']} {r['balanced_accuracy']:.4f} ({r['balanced_accuracy_low']:.4f}-"
                        f"{r['balanced_accuracy_high']:.4f}, {r['images']} images)" for r in rows)
    worst = min(rows, key=lambda r: r["balanced_accuracy"])
    return f"[leuktune] {where} by site, {rows[0]['trial_id']}: balanced accuracy {figures}; worst {worst['site']}"


def absent_lines(rows: list[dict], classes: tuple[str, ...] | list[str]) -> list[str]:
    """A line per site that lacks some of the model's classes, once (not per model): which
    classes its balanced accuracy is over and which are absent."""
    lines = {}
    for r in rows:
        if r["classes_absent"] and r["site"] not in lines:
            have = [c for c in classes if c not in r["classes_absent"]]
            lines[r["site"]] = (f"[leuktune] site {r['site']} is scored on the classes it has: balanced accuracy over "
                                f"{', '.join(have)}; absent there: {', '.join(r['classes_absent'])}")
    return list(lines.values())
