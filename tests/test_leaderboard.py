"""Leaderboard files: atomic appends, one type per column, loading ranked and merged."""

import pandas as pd
import pytest

import leuktune
from leuktune import leaderboard


def test_leaderboards_load_ranked_by_their_own_metric_and_merge(tmp_path):
    for name, mode, values in (("a", "min", [0.3, 0.1]), ("b", "min", [0.2])):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"name: {name}\nsearch: {{metric: val_loss, mode: {mode}}}\n")
        leaderboard.append(run / "leaderboard.parquet",
                           [{"experiment": name, "trial_id": f"{name}{i}", "status": "completed", "val_loss": v}
                            for i, v in enumerate(values)])
    assert leuktune.load_leaderboard(tmp_path / "a")["trial_id"].tolist() == ["a1", "a0"]
    merged = leuktune.load_leaderboard([tmp_path / "a", tmp_path / "b"])
    assert merged["trial_id"].tolist() == ["a1", "b0", "a0"]
    with pytest.raises(leaderboard.LeaderboardError, match="no leaderboard"):
        leuktune.load_leaderboard(tmp_path / "nowhere")


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
