"""Which trials are tied with the top: a paired bootstrap of the difference on the same validation
images (not a band of the top's standard error), the predictions it needs kept in each checkpoint,
and the report's sentence saying what was tested."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leuktune import leaderboard
from leuktune.config import ExperimentConfig, load
from leuktune.leaderboard.ties import BAND, PAIRED, ValPredictions, difference_interval, resample, ties
from leuktune.metrics import classification_metrics, standard_errors
from leuktune.report.collect import Inputs
from leuktune.report.searched import importance, ties_line
from leuktune.training import checkpoint
from leuktune.training.folds import run_folds
from leuktune.training.loop import run_loop
from test_folds import _cv
from test_loop import FakeSession, _cfg, _data, _threads  # noqa: F401 - _threads: an autouse fixture

IMAGES = 100


def _model(wrong: set[int], labels: np.ndarray) -> np.ndarray:
    """Confident probabilities, right on every image but those in ``wrong``."""
    predicted = np.array([1 - y if i in wrong else y for i, y in enumerate(labels)])
    return np.where(np.eye(2)[predicted] == 1, 0.9, 0.1)


def _board(models: dict[str, np.ndarray], labels: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """The search's table of these models' trials (scores and standard errors as the loop reports
    them), and each one's resampled metric from its predictions."""
    rows, draws = [], {}
    for trial, probs in models.items():
        scores, errors = classification_metrics(labels, probs), standard_errors(labels, probs)
        rows.append({"trial_id": trial, "status": "completed", "val_accuracy": scores["accuracy"],
                     "val_accuracy_se": errors["accuracy"], "val_loss": scores["loss"]})
        draws[trial] = resample([ValPredictions.of(np.arange(IMAGES), labels, None, probs)], "val_accuracy")
    return pd.DataFrame(rows), draws


def test_trials_apart_on_a_handful_of_images_are_tied_and_clearly_different_ones_are_not():
    labels = np.tile([0, 1], IMAGES // 2)
    top_wrong = set(range(5))  # 95 of 100 right
    models = {
        "top": _model(top_wrong, labels),
        # three images behind the top, on nine it disagrees with it (six the top gets right, three it
        # gets right): outside the top's standard error (0.022), well within the difference's noise
        "close": _model(top_wrong - {0, 1, 2} | set(range(50, 56)), labels),
        # fifteen images behind, every one of them a loss: different by any rule
        "far": _model(top_wrong | set(range(50, 65)), labels),
    }
    board, draws = _board(models, labels)
    assert board["val_accuracy"].round(2).tolist() == [0.95, 0.92, 0.80]
    judged = ties(board, "val_accuracy", "max", draws).set_index(board["trial_id"])
    assert judged["tied_with_top"].tolist() == [True, True, False]
    assert judged["tied_by"].eq(PAIRED).all() and judged["tie_units"].eq(IMAGES).all()
    low, high = judged.loc["close", ["top_difference_low", "top_difference_high"]]
    assert low < -0.03 < 0 < high  # the interval is of "close" minus the top, and holds 0
    assert judged.loc["far", "top_difference_high"] < 0
    # the band of the top's standard error, today's rule without predictions, calls "close" apart from the top
    band = ties(board, "val_accuracy", "max")
    assert band["tied_with_top"].tolist() == [True, False, False] and band["tied_by"].eq(BAND).all()
    assert leaderboard.tied_with_top(board, "val_accuracy", "max", draws).tolist() == [True, True, False]


def test_a_model_always_wrong_where_the_top_is_right_is_not_tied_though_within_the_band():
    labels = np.tile([0, 1], IMAGES // 2)
    top = _model(set(range(5)), labels)
    behind = _model(set(range(5)) | {50, 51, 52, 53, 54, 55}, labels)  # 6 more wrong, never one more right
    board, draws = _board({"top": top, "behind": behind}, labels)
    board["val_accuracy_se"] = 0.07  # a noisy split's band would hold it
    assert ties(board, "val_accuracy", "max")["tied_with_top"].tolist() == [True, True]
    assert ties(board, "val_accuracy", "max", draws)["tied_with_top"].tolist() == [True, False]


def test_only_trials_scored_on_the_same_images_are_paired_and_groups_move_together():
    labels = np.tile([0, 1], IMAGES // 2)
    probs = _model(set(range(5)), labels)
    patients = np.repeat(np.arange(20), 5)
    same = ValPredictions.of(np.arange(IMAGES), labels, patients, probs)
    shuffled = np.random.default_rng(0).permutation(IMAGES)  # the workers' gather order: the same images
    again = ValPredictions.of(shuffled, labels[shuffled], patients[shuffled], probs[shuffled])
    a, b = resample([same], "val_accuracy"), resample([again], "val_accuracy")
    assert a.units == 20 and difference_interval(a, b) == (0.0, 0.0)
    other = ValPredictions.of(np.arange(IMAGES) + 1000, labels, patients, probs)  # another split's images
    assert difference_interval(a, resample([other], "val_accuracy")) is None
    assert resample([same], "params") is None  # a cost objective has no bootstrap


def test_a_failed_trial_and_a_trial_without_predictions_are_judged_apart():
    labels = np.tile([0, 1], IMAGES // 2)
    board, draws = _board({"top": _model(set(range(5)), labels), "old": _model(set(range(6)), labels)}, labels)
    board = pd.concat([board, pd.DataFrame([{"trial_id": "dead", "status": "error"}])], ignore_index=True)
    del draws["old"]  # its checkpoint keeps no predictions (an earlier release's)
    judged = ties(board, "val_accuracy", "max", draws)
    assert judged["tied_by"].tolist()[:2] == [PAIRED, BAND] and pd.isna(judged["tied_with_top"].iloc[2])


def test_the_kept_checkpoint_keeps_its_validation_predictions_and_they_give_its_scores(tmp_path):
    session = FakeSession(tmp_path)
    run_loop(_cfg(epochs=2, lr=0.01, keep="best"), _data(), session)
    kept = [r for r in session.reports if r.newly_kept_epoch][-1]
    folds = checkpoint.read_val_predictions(str(session.checkpoints[kept.epoch]))
    assert len(folds) == 1 and folds[0].probs.dtype == np.float16 and len(folds[0].rows) == 16
    scores = classification_metrics(folds[0].labels, folds[0].probs.astype(np.float64))
    assert scores["balanced_accuracy"] == pytest.approx(kept.val["balanced_accuracy"])
    assert scores["loss"] == pytest.approx(kept.val["loss"], abs=2e-3)  # float16: about 3 digits
    # an earlier release's checkpoint keeps none: the search falls back to the band
    (session.checkpoints[kept.epoch] / checkpoint.VAL_PREDICTIONS).unlink()
    assert checkpoint.read_val_predictions(str(session.checkpoints[kept.epoch])) is None


def test_a_cross_validated_trials_checkpoint_keeps_each_folds_predictions(tmp_path):
    session = FakeSession(tmp_path)
    run_folds(_cv(epochs=2, lr=0.01), _data(), session)
    report = session.reports[-1]
    folds = checkpoint.read_val_predictions(str(session.checkpoints[report.epoch]))
    assert len(folds) == 3 and sum(len(f.rows) for f in folds) == 48  # every image held out once
    per_fold = [classification_metrics(f.labels, f.probs.astype(np.float64))["balanced_accuracy"] for f in folds]
    assert np.mean(per_fold) == pytest.approx(report.val["balanced_accuracy"])
    # what the search compares: the mean over the folds, fold by fold on their own images
    assert resample(folds, "val_balanced_accuracy").count == 48


def _inputs(board: pd.DataFrame, config: ExperimentConfig | None = None) -> Inputs:
    empty = pd.DataFrame()
    return Inputs([], config or ExperimentConfig(), board, empty, empty, empty, empty, empty, empty, empty, empty)


def _reported(models: dict[str, np.ndarray], labels: np.ndarray, draws_kept: bool = True) -> pd.DataFrame:
    """The leaderboard as a report reads it, ranked, tie columns filled as the search fills them."""
    rows, draws = [], {}
    for trial, probs in models.items():
        scores, errors = classification_metrics(labels, probs), standard_errors(labels, probs)
        rows.append({"trial_id": trial, "status": "completed", "experiment": "e",
                     **{f"val_{m}": v for m, v in scores.items()}, **{f"val_{m}_se": v for m, v in errors.items()},
                     "val_confusion_matrix": [[IMAGES // 2, 0], [0, IMAGES // 2]]})
        draws[trial] = resample([ValPredictions.of(np.arange(IMAGES), labels, None, probs)], "val_balanced_accuracy")
    board = leaderboard.ranked(pd.DataFrame(rows), "val_balanced_accuracy", "max")
    judged = ties(board, "val_balanced_accuracy", "max", draws if draws_kept else None)
    return pd.concat([board, judged], axis=1)


def test_the_report_says_what_the_ties_were_tested_by_and_nothing_more():
    labels = np.tile([0, 1], IMAGES // 2)
    models = {"top": _model(set(range(5)), labels), "close": _model({3, 4} | set(range(50, 56)), labels),
              "far": _model(set(range(5)) | set(range(50, 65)), labels)}
    line = ties_line(_inputs(_reported(models, labels)))
    assert line == ("2 trials (the top included) are tied with the top: the 95% interval of each one's difference "
                    "from the top holds 0 (paired bootstrap of the difference in val_balanced_accuracy on the same "
                    "100 validation images, resampling images).")
    del models["close"]
    assert ties_line(_inputs(_reported(models, labels))).startswith(
        "No other trial is tied with the top: the 95% interval of each one's difference from the top excludes 0 "
        "(paired bootstrap")
    # a run whose checkpoints keep no predictions: the band, said as such
    old = ties_line(_inputs(_reported(models, labels, draws_kept=False)))
    assert old.startswith("1 trial(s) (the top included) are within the top trial's standard error (±0.022)")
    assert "a band, not a test of the difference" in old


def test_importance_is_shown_only_from_enough_trials_per_parameter(tmp_path):
    config = load(None, ["model.backbone={choice: [test_resnet, test_vit]}", "train.lr={loguniform: [1e-4, 1e-1]}",
                         "model.dropout={uniform: [0.0, 0.5]}"])
    rng = np.random.default_rng(0)

    def board(trials: int) -> pd.DataFrame:
        return pd.DataFrame({"trial_id": [f"t{i}" for i in range(trials)], "status": "completed",
                             "backbone": [["test_resnet", "test_vit"][i % 2] for i in range(trials)],
                             "lr": 10 ** rng.uniform(-4, -1, trials), "dropout": rng.uniform(0, 0.5, trials),
                             "val_balanced_accuracy": rng.uniform(0.9, 0.97, trials)})

    few = importance(_inputs(board(6), config), tmp_path)
    assert few == ["Hyperparameter importance not shown: 6 finished trial(s) for 3 parameter(s) that every trial "
                   "drew; it needs at least 5 trials per parameter (15 here) to tell an effect from noise."]
    flat = board(15).assign(val_balanced_accuracy=0.9615)
    assert "all 15 finished trials scored the same" in importance(_inputs(flat, config), tmp_path)[0]
    shown = importance(_inputs(board(15), config), tmp_path)
    assert shown[0].startswith("Hyperparameter importance (Optuna's fANOVA, from 15 finished trials")
    assert sorted(shown[1]["parameter"]) == ["backbone", "dropout", "lr"] and (tmp_path / "importance.png").is_file()
