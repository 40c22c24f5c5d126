"""The whole path: config -> synthetic PNGs -> cache -> Tune/Optuna/ASHA -> trials -> Parquet."""

import duckdb
import numpy as np
import optuna
import pandas as pd
import polars
import pyarrow.parquet as pq
import pytest
import ray

import leuktune
from conftest import TRACKED_TOP_K, tiny_overrides
from leuktune.metrics import METRICS
from leuktune.runfolder import RunFolder
from leuktune.training import checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tracked_run):
    """The session's search through the command line (conftest's tracked_run: four trials one after
    another, ASHA judging them after one epoch, half the learning rates unable to move the weights):
    (run folder, its leaderboard, what it printed)."""
    return tracked_run.folder, tracked_run.board, tracked_run.printed


def test_the_command_line_says_where_its_leaderboard_is(searched):
    run, board, out = searched
    assert f"leaderboard: {run / 'leaderboard.parquet'}" in out
    assert len(board) == 4 and set(board["status"]) <= {"completed", "stopped_early"}
    assert set(board["backbone"]) <= {"test_resnet", "test_efficientnet"}
    assert set(board["lr"]) <= {1e-9, 0.01}
    assert board["val_balanced_accuracy"].between(0, 1).all()
    assert (board["params"] > 0).all() and board["error"].isna().all()
    assert board["data_fingerprint"].nunique() == 1
    # the schema is plain Parquet that any reader accepts
    assert pq.read_schema(run / "leaderboard.parquet").names == list(board.columns)


def test_the_first_trial_is_the_default_recipe_within_the_space(searched):
    _, board, _ = searched
    # the backbone listed first; the recipe's lr 2e-3 moved to the nearest searched choice
    first = board.sort_values("started_at").iloc[0]
    assert (first["backbone"], first["lr"]) == ("test_resnet", 0.01)


def test_asha_stops_trials_at_its_rung_and_names_itself(searched):
    _, board, _ = searched
    stopped = board[board["status"] == "stopped_early"]
    completed = board[board["status"] == "completed"]
    assert len(stopped) >= 1 and len(completed) >= 1
    assert (stopped["stopped_by"] == "asha").all() and (stopped["epochs_run"] == 1).all()
    assert completed["stopped_by"].isna().all() and (completed["epochs_run"] == 2).all()
    # a trial ASHA stopped was below the median at its rung: never above the best trial it let finish
    assert stopped["val_balanced_accuracy"].max() <= completed["val_balanced_accuracy"].max()


def test_the_test_split_is_read_once_for_the_top_trials_with_intervals(searched):
    run, board, _ = searched
    # the final evaluation scores the best evaluate.top_k (2) trials only; each test metric comes with
    # a 95% interval that holds it, and the calibration before and after
    evaluated = board.head(TRACKED_TOP_K)
    assert board.iloc[TRACKED_TOP_K:]["test_accuracy"].isna().all()
    assert evaluated["test_images"].eq(len(split_rows(run, "test"))).all()
    for m in METRICS:
        assert board[f"val_{m}"].notna().any(), m
        inside = (evaluated[f"test_{m}_low"] <= evaluated[f"test_{m}"] + 1e-9) & \
                 (evaluated[f"test_{m}"] <= evaluated[f"test_{m}_high"] + 1e-9)
        assert inside[evaluated[f"test_{m}"].notna()].all(), m
    assert (evaluated["temperature"] > 0).all() and evaluated["test_ece_calibrated"].between(0, 1).all()
    assert board["val_ece"].dropna().between(0, 1).all() and evaluated["test_ece"].between(0, 1).all()
    for row in evaluated.itertuples():
        assert np.array(row.test_confusion_matrix.tolist()).sum() == row.test_images


def test_each_trials_kept_epoch_is_on_disk_as_its_row_says(searched):
    run, board, _ = searched
    for row in board.itertuples():
        assert not row.checkpoint.startswith("/")  # the file keeps it relative to the run folder
        state = checkpoint.load(run / row.checkpoint)
        assert state["class_names"] == ("ALL", "CLL", "healthy") and state["epoch"] == row.kept_epoch
        matrix = np.array(row.val_confusion_matrix.tolist())
        assert matrix.shape == (3, 3) and matrix.trace() / matrix.sum() == pytest.approx(row.val_accuracy)


def test_the_history_split_and_config_are_in_the_run_folder(searched):
    run, board, _ = searched
    history = pd.read_parquet(run / "history.parquet")
    assert len(history) == board["epochs_run"].sum()
    assert history.groupby("trial_id")["lr"].first().gt(0).all()
    split = pd.read_parquet(run / "split.parquet")
    assert len(split) == 60 and split.groupby("group")["split"].nunique().max() == 1
    assert (run / "config.yaml").is_file()


def test_optuna_learned_what_asha_saw(searched):
    # stopped trials PRUNED with their epoch values, finished ones COMPLETE with their best epoch's value
    run, board, _ = searched
    study = optuna_study(run)
    assert sorted(t.state.name for t in study.trials) == sorted(
        "PRUNED" if status == "stopped_early" else "COMPLETE" for status in board["status"])
    for t in study.trials:
        assert set(t.intermediate_values) <= {1, 2} and t.intermediate_values
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value in set(board["val_balanced_accuracy"])


def test_the_study_in_the_run_folder_holds_every_trial_once_with_where_it_ran(searched):
    run, board, _ = searched
    assert (run / "study.db").is_file()
    study = optuna_study(run)
    assert study.study_name == "tiny" and study.metric_names == ["val_balanced_accuracy"]
    by_trial = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert len(by_trial) == len(study.trials) == len(board) and set(by_trial) == set(board["trial_id"])
    history = pd.read_parquet(run / "history.parquet")
    for row in board.itertuples():
        trial = by_trial[row.trial_id]
        assert trial.params == {"lr": row.lr, "backbone": row.backbone}
        assert trial.user_attrs["checkpoint"] == row.checkpoint  # relative to the run
        assert trial.user_attrs["node"] == ray.util.get_node_ip_address()
        epochs = history[history["trial_id"] == row.trial_id]
        assert trial.intermediate_values == dict(zip(epochs["epoch"], epochs["val_balanced_accuracy"]))


def split_rows(run, name):
    split = pd.read_parquet(run / "split.parquet")
    return split[split["split"] == name]


def optuna_study(run):
    """The search's Optuna study, from the database the run keeps it in (its study.db)."""
    return leuktune.Run.open(run).study()


@pytest.fixture(scope="module")
def conditional_front(tmp_path_factory, ray_runtime):
    """One search for two checks that differed only in their space and objectives: conditional
    parameters (each appears only where it applies) and two objectives (the Pareto front marked).
    Random draws of 6 trials over three backbones, two heads (mlp_hidden only for the mlp), two
    unfreeze depths (backbone_lr_mult only when the backbone trains): (run folder, leaderboard)."""
    storage = tmp_path_factory.mktemp("conditional") / "runs"
    overrides = tiny_overrides(storage) + [
        "name=conditional", "train.epochs=1", "search.num_samples=6", "search.scheduler.asha=null",
        "search.searcher.optuna.sampler=random", "search.objectives=[val_balanced_accuracy, params]",
        "model.backbone={choice: [test_resnet, test_efficientnet, test_vit]}",
        "model.head={choice: [linear, mlp]}", "model.mlp_hidden={choice: [16, 32]}",
        "model.unfreeze_depth={choice: [0, all]}", "train.backbone_lr_mult={loguniform: [0.01, 1.0]}"]
    return storage / "conditional", leuktune.search(overrides=overrides, echo=lambda message: None)


def test_readers_of_every_kind_open_both_tables(conditional_front):
    # A search with conditional parameters: each appears only where it applies.
    run, board = conditional_front
    assert set(board["head"]) == {"linear", "mlp"} and set(board["unfreeze_depth"]) == {"0", "all"}
    assert board.loc[board["head"] == "linear", "mlp_hidden"].isna().all()
    assert board.loc[board["head"] == "mlp", "mlp_hidden"].isin([16, 32]).all()
    assert board.loc[board["unfreeze_depth"] == "0", "backbone_lr_mult"].isna().all()
    assert board.loc[board["unfreeze_depth"] == "all", "backbone_lr_mult"].between(0.01, 1.0).all()
    # and what it wrote opens the same in pandas, pyarrow, DuckDB and Polars
    for name, rows in (("leaderboard.parquet", 6), ("history.parquet", 6)):
        path = str(run / name)
        frame = pd.read_parquet(path)
        table = pq.read_table(path)
        assert len(frame) == table.num_rows == rows
        assert duckdb.sql(f"select count(*) from '{path}'").fetchall()[0][0] == rows
        assert polars.read_parquet(path).shape == frame.shape
    table = pq.read_table(run / "leaderboard.parquet")
    assert str(table.schema.field("unfreeze_depth").type) == "string"
    assert str(table.schema.field("mlp_hidden").type) == "int64"
    assert duckdb.sql(f"select count(*) from '{run / 'leaderboard.parquet'}' where head = 'mlp'").fetchall()[0][0] \
        == (board["head"] == "mlp").sum()


def test_asha_and_the_history_count_validated_epochs(tmp_path, ray_runtime):
    # Validation every 2 epochs of 4: ASHA's first rung is the first validation (epoch 2), and
    # only validated epochs are reported, stored and numbered in the history.
    overrides = tiny_overrides(tmp_path / "runs") + [
        "name=every-2", "search.num_samples=4", "search.max_concurrent=1", "train.lr={choice: [1.0e-9, 0.01]}",
        "train.epochs=4", "train.validate_every=2", "train.batch_size=4", "train.warmup_epochs=0",
        "train.augment_strength=0", "evaluate.top_k=0", "search.scheduler.asha={grace_period: 1, reduction_factor: 2}"]
    board = leuktune.search(overrides=overrides, echo=lambda message: None)
    stopped, completed = board[board["status"] == "stopped_early"], board[board["status"] == "completed"]
    assert len(stopped) >= 1 and len(completed) >= 1 and len(stopped) + len(completed) == 4
    assert (stopped["stopped_by"] == "asha").all() and (stopped["epochs_run"] == 2).all()
    assert (completed["epochs_run"] == 4).all() and set(board["kept_epoch"]) <= {2, 4}
    history = pd.read_parquet(tmp_path / "runs" / "every-2" / "history.parquet")
    assert set(history["epoch"]) == {2, 4} and (history["validation"] == history["epoch"] // 2).all()
    assert history["checkpoint_error"].isna().all()


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


def test_a_diverging_trial_and_storage_failures_are_recorded_and_the_search_goes_on(tmp_path, ray_runtime,
                                                                                    monkeypatch):
    # One search of three trials, one after another, for two kinds of trouble: a learning rate that
    # diverges, and the first write of each of the run's tables failing, as a full disk or a lost
    # bucket would (a trial's epoch file, the history when a trial ends, the leaderboard).
    real_write, failed = RunFolder.write_table, set()

    def flaky(folder, name, table):
        kind = "epochs" if name.startswith("history/") else name
        if kind in ("epochs", "history.parquet", "leaderboard.parquet") and kind not in failed:
            failed.add(kind)
            raise OSError(f"injected: {name} unreachable")
        return real_write(folder, name, table)

    monkeypatch.setattr(RunFolder, "write_table", flaky)
    said = []
    overrides = tiny_overrides(tmp_path / "runs") + [
        "name=troubled", "model.backbone=test_resnet", "train.epochs=2", "search.num_samples=3",
        "search.max_concurrent=1", "search.scheduler.asha=null", "search.searcher.optuna.sampler=grid",
        "train.lr={choice: [0.005, 1.0e+30, 0.003]}", "train.grad_clip=0", "evaluate.top_k=0"]
    board = leuktune.search(overrides=overrides, echo=said.append)
    # the diverging trial is a row that says so, and the trials after it ran as usual
    by_lr = board.set_index("lr")
    assert by_lr.loc[1e30, "status"] == "diverged" and by_lr.loc[1e30, "epochs_run"] == 1
    assert pd.isna(by_lr.loc[1e30, "checkpoint_uri"]) and pd.isna(by_lr.loc[1e30, "val_accuracy"])
    assert (by_lr.drop(1e30)["status"] == "completed").all()
    states = {t.params["lr"]: t.state.name for t in optuna_study(tmp_path / "runs" / "troubled").trials}
    assert states == {0.005: "COMPLETE", 1e30: "FAIL", 0.003: "COMPLETE"}
    # each failed write was said once, and nothing was lost or doubled
    assert failed == {"epochs", "history.parquet", "leaderboard.parquet"}
    assert sum("WARNING: could not" in line for line in said) == 3
    assert sorted(board["trial_id"]) == sorted(set(board["trial_id"])) and len(board) == 3
    history = pd.read_parquet(tmp_path / "runs" / "troubled" / "history.parquet")
    assert sorted(zip(history["trial_id"], history["epoch"])) == sorted(
        (t, e) for t, n in zip(board["trial_id"], board["epochs_run"]) for e in range(1, n + 1))  # every epoch once
    assert not list((tmp_path / "runs" / "troubled" / "history").glob("*.parquet"))  # no epoch file left


def test_a_multi_objective_search_marks_its_pareto_front(conditional_front):
    run, board = conditional_front  # objectives: val_balanced_accuracy and params
    assert board["pareto_front"].notna().all() and board["pareto_front"].any()
    # the smallest model is on the front whatever its score: nothing is smaller
    assert board.loc[board["params"].idxmin(), "pareto_front"]
    front = board[board["pareto_front"]]
    for row in board[~board["pareto_front"]].itertuples():  # each trial off the front is beaten on both
        assert ((front["val_balanced_accuracy"] >= row.val_balanced_accuracy) & (front["params"] <= row.params)).any()
    study = optuna_study(run)
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)


def test_a_cross_validated_search_with_more_folds_than_a_class_has_groups_is_refused_before_any_trial(tmp_path):
    """search.cv through Ray is tested with every kind of model in test_model_kinds (its folds, the mean
    reported each epoch, the fold model evaluated, ensembled, predicted and exported); here its refusal."""
    from leuktune.data.files import DataError

    storage = tmp_path / "runs"
    # 20 images a class, 16 of them to deal into folds: 20 folds are refused before any trial runs
    with pytest.raises(DataError, match=r"search.cv 20: class '\w+' has 1[0-9] group\(s\)"):
        leuktune.search(overrides=tiny_overrides(storage) + ["name=too-many", "search.cv=20"], echo=lambda m: None)
    assert not (storage / "too-many" / "trials").exists() and not (storage / "too-many" / "tune").exists()
