"""The report's figures, drawn with matplotlib into PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, no screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from leuktune.metrics.calibration import reliability, rescale  # noqa: E402


def save(fig, path: Path) -> Path:
    """A figure into a PNG file (closed: a report draws many)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_per_value(table: pd.DataFrame, factor: str, metric: str, path: Path) -> Path:
    """The best score reached with each value of one factor (e.g. each backbone)."""
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(table) + 1.2))
    ax.barh(table[factor].astype(str), table[metric], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"{metric} by {factor}")
    return save(fig, path)


def importance(values: dict[str, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(values) + 1.2))
    ax.barh(list(values), list(values.values()), color="#55a868")
    ax.invert_yaxis()
    ax.set_xlabel("importance (Optuna, PED-ANOVA)")
    return save(fig, path)


def learning_curves(history: pd.DataFrame, trials: list[str], metric: str, path: Path) -> Path:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for trial in trials:
        rows = history[history["trial_id"] == trial].sort_values("epoch")
        top.plot(rows["epoch"], rows[metric], marker="o", label=trial)
        bottom.plot(rows["epoch"], rows["train_loss"], marker="o", label=trial)
    top.set_ylabel(metric)
    bottom.set_ylabel("train loss")
    bottom.set_xlabel("epoch")
    top.legend(fontsize=8)
    return save(fig, path)


def progress(board: pd.DataFrame, metric: str, mode: str, path: Path) -> Path:
    """Best score so far against the trial-seconds spent, in the order trials finished."""
    done = board[board[metric].notna()].sort_values("finished_at")
    spent = done["train_seconds"].fillna(0).cumsum()
    best = done[metric].cummax() if mode == "max" else done[metric].cummin()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.scatter(spent, done[metric], s=12, color="#999999", label="each trial")
    ax.step(spent, best, where="post", color="#c44e52", label="best so far")
    ax.set_xlabel("cumulative trial time (s)")
    ax.set_ylabel(metric)
    ax.legend()
    return save(fig, path)


def confusion(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(classes), 1 + 0.6 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, int(value), ha="center", va="center", color="black" if value < matrix.max() / 2 else "white")
    return save(fig, path)


def roc_and_pr(labels: np.ndarray, probs: np.ndarray, classes: list[str], path: Path) -> Path:
    """One-vs-rest ROC and precision-recall curves, a line per class."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4))
    for k, name in enumerate(classes):
        truth = labels == k
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = skm.roc_curve(truth, probs[:, k])
        precision, recall, _ = skm.precision_recall_curve(truth, probs[:, k])
        roc.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
        pr.plot(recall, precision, label=f"{name} (AP {skm.average_precision_score(truth, probs[:, k]):.3f})")
    roc.plot([0, 1], [0, 1], color="#cccccc", linestyle="--")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall, one vs rest")
    roc.legend(fontsize=8)
    pr.legend(fontsize=8)
    return save(fig, path)


def reliability_diagram(labels: np.ndarray, probs: np.ndarray, temperature: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="#cccccc", linestyle="--", label="perfectly calibrated")
    for name, p in (("as trained", probs), (f"temperature {temperature:.2f}", rescale(probs, temperature))):
        bins = reliability(p, labels).dropna()
        ax.plot(bins["confidence"], bins["accuracy"], marker="o", label=name)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="reliability, test split")
    ax.legend()
    return save(fig, path)


def class_counts(counts: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    counts.plot.bar(ax=ax, stacked=True)
    ax.set_ylabel("images")
    ax.set_title("images per class and split")
    return save(fig, path)


def adaptation_curve(curve: pd.DataFrame, lab: str, path: Path) -> Path:
    """Balanced accuracy on a lab's held-out cells (95% interval) against labelled cells a class, a line
    per model, each model's home test figure as a dashed line of its colour."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (model, rows), colour in zip(curve.groupby("model", sort=False), colours):
        rows = rows.sort_values("per_class")
        errors = [rows["balanced_accuracy"] - rows["balanced_accuracy_low"],
                  rows["balanced_accuracy_high"] - rows["balanced_accuracy"]]
        ax.errorbar(rows["per_class"], rows["balanced_accuracy"], yerr=errors, marker="o", capsize=3, color=colour,
                    label=f"{model} ({rows['role'].iloc[0]})")
        home = rows["home_test_balanced_accuracy"].iloc[0]
        if home == home:
            ax.axhline(home, color=colour, linestyle="--", linewidth=1, label=f"{model} at home (test split)")
    ax.set(xlabel="labelled cells a class (0: unadapted)", ylabel="balanced accuracy", ylim=(0, 1.02),
           title=f"adapted to {lab}: its held-out cells")
    ax.legend(fontsize=8)
    return save(fig, path)
