import math

import numpy as np
import pytest

from leuktune.metrics import classification_metrics


def test_metrics_on_a_hand_made_prediction_set():
    # 3 classes; predictions: class 0 all right (2), class 1 one of two right, class 2 right.
    y = np.array([0, 0, 1, 1, 2])
    probs = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.5, .4, .1], [.1, .1, .8]])
    m = classification_metrics(y, probs, prefix="val_")
    assert m["val_accuracy"] == pytest.approx(4 / 5)
    assert m["val_balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    # class 0: precision 2/3, recall 1, f1 0.8; class 1: p 1, r .5, f1 2/3; class 2: 1,1,1
    assert m["val_precision_macro"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert m["val_f1_macro"] == pytest.approx((0.8 + 2 / 3 + 1) / 3)
    assert m["val_f1_weighted"] == pytest.approx((2 * 0.8 + 2 * 2 / 3 + 1) / 5)
    assert m["val_loss"] == pytest.approx(-np.mean(np.log([.8, .6, .7, .4, .8])))
    assert 0.5 < m["val_roc_auc"] <= 1


def test_roc_auc_is_nan_when_a_class_is_absent():
    m = classification_metrics(np.array([0, 0]), np.array([[.9, .1], [.6, .4]]))
    assert math.isnan(m["roc_auc"]) and m["accuracy"] == 1


def test_resampled_metrics_are_scikit_learns_on_the_resampled_rows():
    from leuktune.metrics import METRICS, resampled

    rng = np.random.default_rng(0)
    for classes in (2, 4):
        y = rng.integers(0, classes, 60)
        logits = rng.normal(size=(60, classes)) + np.eye(classes)[y] * 1.5
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        probs[:5] = probs[5]  # tied scores
        counts = rng.multinomial(60, np.full(60, 1 / 60), size=25)
        counts[0, y == 1] = 0  # a resample without class 1: ROC-AUC undefined, as scikit-learn's
        fast = resampled(y, probs, counts)
        for b in range(len(counts)):
            rows = np.repeat(np.arange(60), counts[b])
            slow = classification_metrics(y[rows], probs[rows])
            for m in METRICS:
                assert fast[m][b] == pytest.approx(slow[m], abs=1e-9, nan_ok=True), (classes, b, m)


def test_a_trials_validation_figures_are_scikit_learns_without_importing_it():
    """A trial scores each validation in one vectorised pass with its standard errors
    (scores_and_errors) and counts its confusion matrix itself, instead of importing scikit-learn
    (a second of every trial process's start, issue 37): the same figures."""
    from sklearn import metrics as skm

    from leuktune.metrics import confusion_matrix, scores_and_errors, standard_errors

    rng = np.random.default_rng(3)
    for classes, absent in ((2, None), (4, None), (4, 2)):
        y = rng.integers(0, classes, 90)
        if absent is not None:
            y[y == absent] = 0  # a class missing from the split: ROC-AUC undefined, balanced accuracy over the rest
        logits = rng.normal(size=(90, classes)) + np.eye(classes)[y]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        groups = np.arange(90) // 3
        scores, errors = scores_and_errors(y, probs, groups)
        expected = classification_metrics(y, probs)
        assert scores.keys() == expected.keys()
        for name, value in expected.items():
            assert scores[name] == pytest.approx(value, abs=1e-9, nan_ok=True), (classes, absent, name)
        assert errors == pytest.approx(standard_errors(y, probs, groups), nan_ok=True)
        assert confusion_matrix(y, probs) == skm.confusion_matrix(y, probs.argmax(axis=1),
                                                                  labels=np.arange(classes)).tolist()


def test_calibration_error_is_the_reliability_tables_weighted_gap():
    from leuktune.metrics.calibration import expected_calibration_error, reliability

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) * 2 + np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    table = reliability(probs, y).dropna()
    expected = (table["count"] * (table["confidence"] - table["accuracy"]).abs()).sum() / len(y)
    assert expected_calibration_error(probs, y) == pytest.approx(expected, abs=1e-12) and expected > 0.05
    m = classification_metrics(y, probs, prefix="val_")
    assert m["val_ece"] == pytest.approx(expected, abs=1e-12)
    # perfectly calibrated one-hot predictions that are all right: no gap
    assert expected_calibration_error(np.eye(3)[y], y) == 0
