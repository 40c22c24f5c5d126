"""Leaderboard files: one type per column, atomic appends, loading ranked and merged, Pareto front."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import leuktune
from leuktune import leaderboard
from leuktune.cli.evaluate import main as evaluate_main
from leuktune.metrics import METRICS
from leuktune.report.collect import collect
from leuktune.runfolder import RunFolder


def rows(name, values, **extra):
    return [{"experiment": name, "trial_id": f"{name}{i}", "status": "completed", "val_loss": v, **extra}
            for i, v in enumerate(values)]


def test_each_hyperparameter_has_one_type_whatever_was_drawn(tmp_path):
    columns = leaderboard.schema(["backbone", "lr", "mlp_hidden", "unfreeze_depth"])
    assert columns.field("lr").type == pa.float64() and columns.field("mlp_hidden").type == pa.int64()
    assert columns.field("unfreeze_depth").type == pa.string() and columns.field("backbone").type == pa.string()
    folder = RunFolder(str(tmp_path), "run")
    # a first search drew only integers for unfreeze_depth; the column is text all the same
    leaderboard.append(folder, "leaderboard.parquet", [{"trial_id": "a", "unfreeze_depth": 2, "lr": 1}], columns)
    leaderboard.append(folder, "leaderboard.parquet", [{"trial_id": "b", "unfreeze_depth": "all"}], columns)
    table = pq.read_table(tmp_path / "run" / "leaderboard.parquet")
    assert table.schema == columns
    assert table.column("unfreeze_depth").to_pylist() == ["2", "all"] and table.column("lr").to_pylist() == [1.0, None]
    assert not list((tmp_path / "run").glob(".*tmp"))  # nothing half-written left behind
    # written again (a retry): the trial's rows are replaced, not added
    leaderboard.append(folder, "leaderboard.parquet", [{"trial_id": "a", "unfreeze_depth": 3}], columns,
                       replacing=["a"])
    assert pq.read_table(tmp_path / "run" / "leaderboard.parquet").to_pydict()["unfreeze_depth"] == ["all", "3"]


def test_leaderboards_load_ranked_by_their_own_metric_and_merge(tmp_path):
    columns = leaderboard.schema([])
    for name, values in (("a", [0.3, 0.1]), ("b", [0.2])):
        folder = RunFolder(str(tmp_path), name)
        folder.write_text("config.yaml", f"name: {name}\nsearch: {{metric: val_loss, mode: min}}\n")
        leaderboard.append(folder, "leaderboard.parquet", rows(name, values), columns)
    assert leuktune.load_leaderboard(tmp_path / "a")["trial_id"].tolist() == ["a1", "a0"]
    merged = leuktune.load_leaderboard([tmp_path / "a", tmp_path / "b" / "leaderboard.parquet"])
    assert merged["trial_id"].tolist() == ["a1", "b0", "a0"]
    with pytest.raises(leaderboard.LeaderboardError, match="no leaderboard"):
        leuktune.load_leaderboard(tmp_path / "nowhere")


def test_failed_and_diverged_trials_rank_last():
    board = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "status": ["error", "completed", "diverged", "completed"],
                          "val_accuracy": [None, 0.5, None, 0.7]})
    assert leaderboard.ranked(board, "val_accuracy", "max")["trial_id"].tolist() == ["d", "b", "a", "c"]


def test_trials_that_tie_on_the_metric_rank_by_their_validation_loss_then_calibration_error(tmp_path):
    # four of six tied at 0.9808 on a 52-image validation split: the lower loss first; a and d also tie
    # on the loss: the lower calibration error first (d); then the table's order
    board = pd.DataFrame({"trial_id": list("abcdef"), "status": ["completed"] * 5 + ["stopped_early"],
                          "val_balanced_accuracy": [0.9808, 0.9615, 0.9808, 0.9808, 0.9808, 0.99],
                          "val_loss": [0.20, 0.01, 0.08, 0.20, None, 0.50],
                          "val_ece": [0.09, 0.01, 0.20, 0.03, 0.01, 0.10]})
    assert leaderboard.ranked(board, "val_balanced_accuracy", "max")["trial_id"].tolist() == list("fcdaeb")
    # what load_leaderboard, load_model(run), the final evaluation's top-k and the report read
    folder = RunFolder(str(tmp_path), "ties")
    folder.write_text("config.yaml", "name: ties\n")
    leaderboard.append(folder, "leaderboard.parquet", board.assign(experiment="ties").to_dict("records"),
                       leaderboard.schema([]))
    assert leuktune.load_leaderboard(tmp_path / "ties")["trial_id"].tolist() == list("fcdaeb")
    # a board without calibration errors (an earlier leuktune's) still ranks by the loss
    assert leaderboard.ranked(board.drop(columns="val_ece"), "val_balanced_accuracy",
                              "max")["trial_id"].tolist() == list("fcadeb")


def test_a_table_written_before_a_column_existed_takes_new_rows(tmp_path):
    # a run started by an earlier leuktune (no val_ece) resumed by this one: its rows stay, the column is null
    folder = RunFolder(str(tmp_path), "old")
    columns = leaderboard.schema([])
    old = leaderboard.table(rows("old", [0.3]), columns).drop_columns(["val_ece"])
    folder.write_table("leaderboard.parquet", old)
    leaderboard.append(folder, "leaderboard.parquet", rows("old", [0.2], val_ece=0.05, trial_id="old1"), columns)
    table = pq.read_table(tmp_path / "old" / "leaderboard.parquet")
    assert table.schema == columns
    assert table.column("trial_id").to_pylist() == ["old0", "old1"]
    assert table.column("val_ece").to_pylist() == [None, 0.05] and table.column("val_loss").to_pylist() == [0.3, 0.2]


def test_pareto_front_keeps_the_trials_nothing_beats_on_every_objective():
    board = pd.DataFrame({
        "trial_id": ["big-best", "small-good", "dominated", "tiny-poor", "failed"],
        "status": ["completed", "completed", "completed", "stopped_early", "error"],
        "val_balanced_accuracy": [0.95, 0.90, 0.85, 0.60, None],
        "params": [25e6, 4e6, 10e6, 1e5, 1e3]})
    front = leaderboard.pareto_front(board, ["val_balanced_accuracy", "params"], ["max", "min"])
    assert board["trial_id"][front].tolist() == ["big-best", "small-good", "tiny-poor"]


def test_a_run_folder_of_the_release_before_the_renames_opens_under_todays_names(tmp_path, capsys):
    """Before: best_epoch (trials, leaderboard), improved_epoch (history), cv.parquet and its cv_* columns."""
    folder = RunFolder(str(tmp_path), "old")
    folder.write_text("config.yaml", "name: old\n")
    trials = pd.DataFrame(rows("old", [0.3, 0.2], best_epoch=2, epochs_run=3))
    folder.write_table("trials.parquet", trials)
    history = pd.DataFrame([{"experiment": "old", "trial_id": "old0", "epoch": e, "val_loss": 0.4 - e / 10,
                             "improved_epoch": e if e < 3 else 0} for e in (1, 2, 3)])
    folder.write_table("history.parquet", history)
    folder.write_table("cv.parquet", pd.DataFrame([{"trial_id": "old1", "fold": f, "folds": 2, "images": 10,
                                                     **{m: 0.8 + f / 10 for m in METRICS}} for f in (0, 1)]))
    run = leuktune.Run.open(tmp_path / "old")
    board = run.leaderboard().set_index("trial_id")
    assert board["kept_epoch"].tolist() == [2, 2] and "best_epoch" not in board
    assert board.loc["old1", "refit_folds"] == 2 and board.loc["old1", "refit_balanced_accuracy_mean"] == pytest.approx(0.85)
    assert pd.isna(board.loc["old0", "refit_folds"])
    assert run.history()["newly_kept_epoch"].tolist() == [1, 2, 0]
    assert collect([tmp_path / "old"]).refit_folds["fold"].tolist() == [0, 1]  # the report's table
    # a search resumed into it adds today's rows beside the earlier ones, whose values keep their meaning
    leaderboard.append(folder, "history.parquet", [{"experiment": "old", "trial_id": "old1", "epoch": 1,
                                                    "newly_kept_epoch": 1}], leaderboard.HISTORY)
    assert run.history()["newly_kept_epoch"].tolist() == [1, 2, 0, 1]
    # an evaluation gives it today's file (the earlier one is left); evaluate(cv=K) is read with one warning line
    lines = []
    run.evaluate(cv=2, echo=lines.append)  # no trial has a checkpoint: nothing is retrained
    assert [line for line in lines if "WARNING" in line] == [
        "[leuktune] WARNING: evaluate(cv=2) is now evaluate(refit_folds=2) (retraining the chosen trials on folds; "
        "search.cv is the folds that choose them); read as refit_folds"]
    assert pd.read_parquet(tmp_path / "old" / "refit_folds.parquet").equals(pd.read_parquet(tmp_path / "old" / "cv.parquet"))
    # the command line's --cv too
    assert evaluate_main([str(tmp_path / "old"), "--cv", "2"]) == 0
    assert capsys.readouterr().out.count("WARNING: --cv 2 is now --refit-folds 2") == 1
