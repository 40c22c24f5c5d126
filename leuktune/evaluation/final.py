"""The final evaluation: the top trials of a search scored once on the test split.

For each: the test metrics and confusion matrix, each metric with a 95% bootstrap interval
(resampling patients where the data has them); the expected calibration error before and
after temperature scaling fitted on the validation split (the temperature is stored in the
run's ``test.parquet``, and used by ``predict``); and, separately, the metrics of flip test-time
augmentation; and, where the data's groups (patients) hold several images of one class, the
metrics over patients (``leuktune.evaluation.patients``). Written to ``test.parquet`` (a row per
model: the leaderboard's ``test_*`` columns), ``evaluation.parquet`` (every figure, long form),
``test_predictions.parquet`` (what the report plots; each image's site) and, by site,
``test_by_site.parquet`` (``leuktune.evaluation.by_site``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.evaluation.bootstrap import metric_rows
from leuktune.evaluation.by_site import site_of
from leuktune.evaluation.patients import VARIANT, patient_figures
from leuktune.metrics.calibration import expected_calibration_error, fit_temperature, rescale
from leuktune.metrics import confusion_matrix
from leuktune.leaderboard import trial_rows
from leuktune.results import FAILED, TestFigures
from leuktune.trained import load_model


def evaluable(board: pd.DataFrame) -> pd.DataFrame:
    """The ranked leaderboard's trials that have a model to evaluate."""
    trials = trial_rows(board)
    return trials[~trials["status"].isin(FAILED) & trials["checkpoint_uri"].notna()]


def test_figures(trial_id: str, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, temperature: float,
                 cfg: ExperimentConfig) -> tuple[TestFigures, list[dict], str]:
    """One model's test-split figures from its probabilities (before its ``temperature``): its
    ``TestFigures`` (metrics, 95% intervals, calibration error before and after the temperature),
    its evaluation.parquet rows (plain, calibration, patient level), and the line that says its
    patient-level figures or why there are none. A trial and the ensemble are scored alike."""
    settings, seed = cfg.evaluate, cfg.data.split.seed
    figures = metric_rows(trial_id, "plain", labels, probs, groups, resamples=settings.bootstrap, seed=seed)
    calibrated = rescale(probs, temperature)
    scored = TestFigures(model=trial_id, scores={r["metric"]: r["value"] for r in figures},
                         low={r["metric"]: r["low"] for r in figures}, high={r["metric"]: r["high"] for r in figures},
                         confusion_matrix=confusion_matrix(labels, probs), images=len(labels), temperature=temperature,
                         ece_calibrated=expected_calibration_error(calibrated, labels))
    figures += [{"trial_id": trial_id, "variant": "calibrated", "metric": "ece", "value": scored.ece_calibrated}]
    patient_rows, patient_line = patient_figures(trial_id, labels, calibrated, groups, resamples=settings.bootstrap,
                                                 seed=seed)
    return scored, figures + patient_rows, patient_line


def line(scored: TestFigures) -> str:
    """A model's test figures as the console says them."""
    balanced = "balanced_accuracy"
    return (f"balanced accuracy {scored.scores[balanced]:.4f} (95% CI {scored.low[balanced]:.4f}-"
            f"{scored.high[balanced]:.4f})")


def evaluate_trial(row: pd.Series, data: CachedDataset, groups: np.ndarray, cfg: ExperimentConfig,
                   device=None) -> tuple[dict, list[dict], pd.DataFrame, str]:
    """(TestFigures, evaluation rows, test predictions, patient-level line) of one trial's kept checkpoint."""
    model = load_model(row, device=device)
    settings = cfg.evaluate
    test_rows, val_rows = data.indices("test"), data.indices("val")
    labels, val_labels = data.labels[test_rows], data.labels[val_rows]
    probs = model.split_probabilities(data, "test")
    temperature = fit_temperature(model.split_probabilities(data, "val"), val_labels)
    columns, figures, patient_line = test_figures(row["trial_id"], labels, probs, groups, temperature, cfg)
    predictions = pd.DataFrame({"trial_id": row["trial_id"], "row": test_rows, "label": labels,
                                "probs": list(probs.astype(np.float64))})
    if settings.tta:
        flipped = model.split_probabilities(data, "test", tta=True)
        figures += metric_rows(row["trial_id"], "flip_tta", labels, flipped, groups, resamples=settings.bootstrap,
                               seed=cfg.data.split.seed)
        predictions["probs_tta"] = list(flipped.astype(np.float64))
    return columns, figures, predictions, patient_line


def final_evaluation(cfg: ExperimentConfig, chosen: pd.DataFrame, data: CachedDataset, split: pd.DataFrame,
                     echo: Callable[[str], None] = print, device=None) -> tuple[list[TestFigures], list, list]:
    """Score the ``chosen`` leaderboard rows on the test split: their figures, the evaluation rows
    and the prediction tables."""
    groups = split["group"].to_numpy()[data.indices("test")]
    scored, figures, predictions = [], [], []
    for _, row in chosen.iterrows():
        columns, rows, predicted, patient_line = evaluate_trial(row, data, groups, cfg, device)
        scored.append(columns)
        # the patient-level line for every trial that has the figures; why there are none, once
        say_patients = any(r["variant"] == VARIANT for r in rows) or not predictions
        figures += rows
        predictions.append(predicted.assign(path=split["path"].to_numpy()[predicted["row"]],
                                            site=site_of(split, predicted["row"].to_numpy(), cfg.data)))
        echo(f"[leuktune] test split, trial {row['trial_id']}: {line(columns)}, ECE {columns.scores['ece']:.3f} -> "
             f"{columns.ece_calibrated:.3f} at temperature {columns.temperature:.2f}"
             + (f"; {patient_line}" if say_patients else ""))
    return scored, figures, predictions
