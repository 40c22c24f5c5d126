"""The whole path: config -> synthetic PNGs -> cache -> Tune/Optuna/ASHA -> TorchTrainer -> Parquet."""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import numpy as np
import pytest

from conftest import tiny_overrides
from leuktune import leaderboard
from leuktune.config import METRICS
from leuktune.search.__main__ import main
from leuktune.train import checkpoint


def test_search_end_to_end_writes_a_real_leaderboard(tmp_path, capsys, ray_runtime):
    args = [a for o in tiny_overrides(tmp_path / "runs") for a in ("--set", o)]
    assert main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "tiny"
    assert f"leaderboard: {run / 'leaderboard.parquet'}" in out

    board = pd.read_parquet(run / "leaderboard.parquet")
    assert len(board) == 2 and set(board["status"]) <= {"completed", "stopped_early"}
    assert set(board["backbone"]) <= {"test_resnet", "test_efficientnet"}
    assert board["lr"].between(1e-3, 1e-2).all()
    for m in METRICS:
        assert f"val_{m}" in board and f"test_{m}" in board
    assert board["val_balanced_accuracy"].between(0, 1).all()
    assert (board["epochs_run"] >= 1).all() and (board["params"] > 0).all()
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
    assert history.groupby("trial_id")["lr"].first().gt(0).all() and set(board["stopped_by"].dropna()) <= {"asha", "patience"}
    split = pd.read_parquet(run / "split.parquet")
    assert len(split) == 60 and split.groupby("group")["split"].nunique().max() == 1
    assert (run / "config.yaml").is_file()


def test_leaderboard_append_keeps_earlier_rows(tmp_path):
    path = tmp_path / "leaderboard.parquet"
    leaderboard.append(path, [{"trial_id": "a", "status": "completed", "val_accuracy": 0.5}])
    leaderboard.append(path, [{"trial_id": "b", "status": "error", "val_accuracy": None}])
    board = pd.read_parquet(path)
    assert board["trial_id"].tolist() == ["a", "b"]
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind
    ranked = leaderboard.ranked(board, "val_accuracy", "max")
    assert ranked["trial_id"].tolist() == ["a", "b"]


def test_mixed_type_hyperparameters_are_stored_as_text(tmp_path):
    path = tmp_path / "leaderboard.parquet"
    leaderboard.append(path, [{"trial_id": "a", "unfreeze_depth": 2}])
    leaderboard.append(path, [{"trial_id": "b", "unfreeze_depth": "all"}])
    assert pd.read_parquet(path)["unfreeze_depth"].tolist() == ["2", "all"]
