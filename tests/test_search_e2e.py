"""The whole path: config -> synthetic PNGs -> cache -> Tune/Optuna/ASHA -> trials -> Parquet."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import leuktune
from conftest import tiny_overrides
from leuktune.metrics import METRICS
from leuktune.search.__main__ import main
from leuktune.train import checkpoint

pytestmark = pytest.mark.slow


def test_search_end_to_end_writes_a_real_leaderboard(tmp_path, capsys, ray_runtime):
    # Four trials one after another; ASHA judges them after one epoch. Half the learning rates
    # cannot move the weights, so a trial drawn after a learning one is stopped at its first rung.
    overrides = tiny_overrides(tmp_path / "runs") + [
        "search.num_samples=4", "search.max_concurrent=1", "train.lr={choice: [1.0e-9, 0.01]}",
        "train.batch_size=4", "train.warmup_epochs=0",
        "search.scheduler.asha={grace_period: 1, reduction_factor: 2}"]
    assert main([a for o in overrides for a in ("--set", o)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "tiny"
    assert f"leaderboard: {run / 'leaderboard.parquet'}" in out

    board = pd.read_parquet(run / "leaderboard.parquet")
    assert len(board) == 4 and set(board["status"]) <= {"completed", "stopped_early"}
    assert set(board["backbone"]) <= {"test_resnet", "test_efficientnet"}
    assert set(board["lr"]) <= {1e-9, 0.01}
    # ASHA's stops: after the grace period, never the best trial, and named as ASHA's
    stopped = board[board["status"] == "stopped_early"]
    completed = board[board["status"] == "completed"]
    assert len(stopped) >= 1 and len(completed) >= 1
    assert (stopped["stopped_by"] == "asha").all() and (stopped["epochs_run"] == 1).all()
    assert completed["stopped_by"].isna().all() and (completed["epochs_run"] == 2).all()
    assert stopped["val_balanced_accuracy"].max() <= board["val_balanced_accuracy"].max()
    # the search never reads the test split: only the final evaluation fills test_* columns
    for m in METRICS:
        assert board[f"val_{m}"].notna().any() and board[f"test_{m}"].isna().all(), m
    assert board["val_balanced_accuracy"].between(0, 1).all()
    assert (board["params"] > 0).all() and board["error"].isna().all()
    assert board["data_fingerprint"].nunique() == 1
    # the best epoch's weights are on disk and load into torch
    for row in board.itertuples():
        state = checkpoint.load(row.checkpoint_uri)
        assert state["class_names"] == ("ALL", "CLL", "healthy") and state["epoch"] == row.best_epoch
        matrix = np.array(row.val_confusion_matrix.tolist())
        assert matrix.shape == (3, 3) and matrix.trace() / matrix.sum() == pytest.approx(row.val_accuracy)
    # the schema is plain Parquet that any reader accepts
    assert pq.read_schema(run / "leaderboard.parquet").names == list(board.columns)

    history = pd.read_parquet(run / "history.parquet")
    assert len(history) == board["epochs_run"].sum()
    assert history.groupby("trial_id")["lr"].first().gt(0).all()
    split = pd.read_parquet(run / "split.parquet")
    assert len(split) == 60 and split.groupby("group")["split"].nunique().max() == 1
    assert (run / "config.yaml").is_file()


def test_a_failing_trial_is_a_leaderboard_row_that_says_why(tmp_path, ray_runtime):
    # Weights that exist but are not weights: the trial fails inside Ray, the search goes on.
    broken = tmp_path / "test_resnet.pth"
    broken.write_bytes(b"not a checkpoint")
    overrides = tiny_overrides(tmp_path / "runs") + [
        "name=broken", "model.backbone=test_resnet", "model.pretrained=true", f"model.pretrained_path={broken}",
        "search.num_samples=1", "resources.max_failures=0"]
    board = leuktune.search(overrides=overrides, echo=lambda message: None)
    row = board.iloc[0]
    assert row["status"] == "error" and row["epochs_run"] == 0
    assert row["error"].startswith("WeightsError: pretrained weights for backbone 'test_resnet'")
    assert str(broken) in row["error"]
    assert row["error_file"].endswith("error.txt") and "WeightsError" in open(row["error_file"]).read()
