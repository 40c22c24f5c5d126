"""Following a search where researchers look: its study in SQLite, optuna-dashboard on it, a warm
start from an earlier run, MLflow (a real tracking server on loopback) and TensorBoard event files."""

import json
import os
import subprocess
import sys
import urllib.request

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import leuktune
from conftest import TRACKED_TOP_K, search_command_line, tiny_overrides, wait_for
from leuktune.cli.search import main as search_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def followed(tracked_run):
    """The session's search of 4 trials (conftest's tracked_run) followed by MLflow and TensorBoard,
    ASHA stopping the hopeless ones, the best TRACKED_TOP_K scored on the test split: (run folder,
    its leaderboard, the MLflow URI)."""
    return tracked_run.folder, tracked_run.board, tracked_run.mlflow


def test_mlflow_gets_a_run_per_trial_with_each_epochs_metrics_its_end_and_test_figures(followed):
    run, board, uri = followed
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.data.tags["leuktune.trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    trials = board[board["trial_id"] != "ensemble"]
    assert set(runs) == set(trials["trial_id"]) and len(runs) == len(trials)
    history = pd.read_parquet(run / "history.parquet")
    tests = pd.read_parquet(run / "test.parquet").set_index("trial_id")
    for row in trials.itertuples():
        mlflow_run = runs[row.trial_id]
        assert mlflow_run.info.run_name == row.trial_id
        assert mlflow_run.data.params == {"lr": str(row.lr), "backbone": row.backbone}
        assert mlflow_run.info.status == {"completed": "FINISHED", "stopped_early": "KILLED"}[row.status]
        assert mlflow_run.data.tags["leuktune.checkpoint"] == row.checkpoint
        epochs = history[history["trial_id"] == row.trial_id]
        logged = client.get_metric_history(mlflow_run.info.run_id, "val_balanced_accuracy")
        assert sorted((m.step, m.value) for m in logged) == sorted(zip(epochs["epoch"], epochs["val_balanced_accuracy"]))
        assert len(client.get_metric_history(mlflow_run.info.run_id, "train_loss")) == len(epochs)
        if row.trial_id in tests.index:
            assert mlflow_run.data.metrics["test_balanced_accuracy"] == tests.loc[row.trial_id, "test_balanced_accuracy"]
        else:
            assert "test_balanced_accuracy" not in mlflow_run.data.metrics
    assert len(tests.drop(index="ensemble", errors="ignore")) == TRACKED_TOP_K


def test_tensorboard_has_event_files_per_trial_with_each_validated_epoch(followed):
    run, board, _ = followed
    history = pd.read_parquet(run / "history.parquet")
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == sorted(history["trial_id"].unique())
    for trial_id, epochs in history.groupby("trial_id"):
        events = EventAccumulator(str(run / "tensorboard" / trial_id))
        events.Reload()
        scalars = events.Scalars("val/balanced_accuracy")
        assert [(s.step, round(s.value, 6)) for s in scalars] == \
            [(e, round(v, 6)) for e, v in zip(epochs["epoch"], epochs["val_balanced_accuracy"])]
        assert {"train/loss", "train/lr", "val/loss"} <= set(events.Tags()["scalars"])


def test_the_dashboard_serves_the_runs_study_on_the_port_it_prints(followed):
    run, board, _ = followed
    study = leuktune.Run.open(run).study()
    dashboard = subprocess.Popen([sys.executable, "-m", "leuktune.dashboard", str(run)], stdout=subprocess.PIPE,
                                 text=True, start_new_session=True)
    try:
        line = dashboard.stdout.readline()
        assert line.startswith("[leuktune] optuna-dashboard of study 'tiny'"), line
        address = line.split(" at ")[1].split()[0]  # http://127.0.0.1:PORT/dashboard/studies/ID
        base, _, study_id = address.partition("/dashboard/studies/")
        wait_for(f"{base}/api/studies", dashboard)
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as answer:
            (listed,) = json.load(answer)["study_summaries"]
        assert listed["study_name"] == "tiny" and str(listed["study_id"]) == study_id
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=30) as answer:
            detail = json.load(answer)
        served = {t["number"]: t for t in detail["trials"]}
        assert sorted(served) == [t.number for t in study.trials]
        for trial in study.trials:
            assert served[trial.number]["state"] == trial.state.name.capitalize()
            attrs = {a["key"]: a["value"] for a in served[trial.number]["user_attrs"]}
            assert attrs["trial_id"] in set(board["trial_id"])
        with urllib.request.urlopen(address, timeout=30) as page:  # the web app itself
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        os.killpg(dashboard.pid, 15)
        dashboard.wait(timeout=30)


def test_a_warm_started_search_begins_with_the_earlier_runs_trials(followed, tmp_path):
    run, board, _ = followed
    earlier = leuktune.Run.open(run).study()
    completed = [t for t in earlier.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # this search's lr range holds only one of the earlier run's choices; its backbone is fixed
    out = search_command_line(tiny_overrides(tmp_path / "runs") + [
        "name=second", "search.num_samples=2", "search.max_concurrent=1", "evaluate.top_k=0",
        "model.backbone=test_resnet", "train.lr={loguniform: [1.0e-3, 0.1]}", f"search.warm_start=[{run}]"])
    line = next(line for line in out.splitlines() if line.startswith("[leuktune] warm start from"))
    assert line.startswith(f"[leuktune] warm start from {run}: ")
    assert "backbone (only there)" in line and "lr ({choice: [1e-09, 0.01]} there, {loguniform: [0.001, 0.1]} here)" \
        in line, line
    study = leuktune.Run.open(tmp_path / "runs" / "second").study()
    warm = [t for t in study.trials if "warm_start" in t.user_attrs]
    # what this space holds of the earlier trials: lr 0.01 lies in its range, 1e-9 does not; a trial with
    # nothing left is not added
    kept = [t for t in completed if t.params["lr"] == 0.01]
    assert kept and [t.number for t in warm] == list(range(len(kept)))  # the study begins with them
    assert [t.user_attrs["warm_start_trial_id"] for t in warm] == [t.user_attrs["trial_id"] for t in kept]
    for old, new in zip(kept, warm):
        assert new.state == optuna.trial.TrialState.COMPLETE and new.values == old.values
        assert new.params == {"lr": 0.01} and new.intermediate_values == old.intermediate_values
    ran = [t for t in study.trials if "warm_start" not in t.user_attrs]
    assert len(ran) == 2 and all(t.user_attrs.get("trial_id") for t in ran)


def test_a_warm_start_from_a_run_that_shares_no_parameter_is_refused(followed, tmp_path, capsys):
    # the command line's main in this process (python -m leuktune.search's exit status 2 on a refused
    # config is tested as a subprocess in test_config and test_follow_input)
    run, _, _ = followed
    returned = search_main([a for o in tiny_overrides(tmp_path / "runs") + [
        "model.backbone=test_resnet", "train.lr=0.01", "model.dropout={uniform: [0.0, 0.5]}",
        f"search.warm_start=[{run}]"] for a in ("--set", o)])
    refused = capsys.readouterr()
    assert returned == 2
    assert f"search.warm_start[0] {run}: its space (backbone, lr) shares no parameter with this search's (dropout)" \
        in refused.err, refused.err
    assert not (tmp_path / "runs" / "tiny" / "tune").exists()
