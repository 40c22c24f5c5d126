"""Bad input to following a search: one error before any trial, naming what cannot be reached."""

import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import tiny_overrides
from raynodes import free_ports
from leuktune.cli.dashboard import main as dashboard
from leuktune import internals
from leuktune.config import load
from leuktune.runfolder import RunFolder
from leuktune.study import StudyError
from leuktune.tuning import study_setup
from leuktune.tuning.searcher import make_searcher
from leuktune.tuning.dryrun import dry_run


def _search(tmp_path, *overrides):
    args = [a for o in [*tiny_overrides(tmp_path / "runs"), *overrides] for a in ("--set", o)]
    return subprocess.run([sys.executable, "-m", "leuktune.search", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("url, shown", [
    ("postgresql://leuk:secret@127.0.0.1:1/optuna", "postgresql://leuk:***@127.0.0.1:1/optuna"),
    ("sqlite:////nonexistent-folder/studies/study.db", "sqlite:////nonexistent-folder/studies/study.db"),
])
def test_a_study_database_that_cannot_be_reached_is_one_error_before_any_trial(tmp_path, url, shown):
    failed = _search(tmp_path, f"search.study.storage={url}")
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert f"error: search.study.storage {shown}: cannot open the study database (" in failed.stderr
    assert "secret" not in failed.stderr + failed.stdout
    assert not (tmp_path / "runs" / "tiny" / "tune").exists()  # no trial ran (Ray was not started)


@pytest.mark.slow
def test_an_mlflow_server_that_does_not_answer_is_one_error_before_any_trial(tmp_path):
    (port,) = free_ports(1)  # nothing listens there once the socket is closed
    failed = _search(tmp_path, f"tracking.mlflow=http://127.0.0.1:{port}")
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert f"error: tracking.mlflow http://127.0.0.1:{port}: cannot reach the MLflow tracking server (" in failed.stderr
    assert not (tmp_path / "runs" / "tiny" / "tune").exists()


def test_the_dashboard_of_a_run_without_a_study_says_so(tmp_path, capsys):
    run = tmp_path / "runs" / "earlier"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(load(None, ["name=earlier"]).to_yaml())
    assert dashboard([str(run)]) == 2
    err = capsys.readouterr().err
    assert f"error: {run}: no study 'earlier' ({run} has no study.db)" in err
    assert not (run / "study.db").exists()  # asking made no empty database
    assert dashboard([str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_the_dashboards_help_shows_a_working_example():
    shown = subprocess.run([sys.executable, "-m", "leuktune.dashboard", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and "python -m leuktune.dashboard runs/synthetic-default" in shown.stdout


def test_a_dry_run_says_where_the_study_goes_and_what_would_stop_it(tmp_path):
    text = dry_run(None, [f"storage.path={tmp_path / 'runs'}", "tracking.tensorboard=true",
                          "search.study.storage=sqlite:////nonexistent-folder/study.db"])
    assert "study 'synthetic-default': sqlite:////nonexistent-folder/study.db\n  a search would stop here: " \
           "search.study.storage sqlite:////nonexistent-folder/study.db: cannot open the study database" in text
    assert f"followed by: TensorBoard event files under {tmp_path / 'runs' / 'synthetic-default'}/tensorboard" in text
    refused = dry_run(None, [f"storage.path={tmp_path / 'runs'}", f"search.warm_start=[{tmp_path / 'nothing'}]"])
    assert f"study 'synthetic-default': {tmp_path / 'runs' / 'synthetic-default'}/study.db (SQLite, in the run " \
           f"folder)\n  a search would stop here: search.warm_start[0] {tmp_path / 'nothing'}: " in refused
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_a_pickled_searcher_reopens_its_study_where_it_is_and_catches_up_with_it(tmp_path):
    # Tune pickles the searcher now and then; the study in its database may be ahead when the search resumes
    cfg = RunFolder.resolved(load(None, [f"storage.path={tmp_path / 'runs'}", "search.num_samples=4"]))
    folder = RunFolder.of(cfg)
    folder.makedirs()
    searcher = make_searcher(cfg, study_setup.prepare(cfg, folder, resume=False, echo=lambda line: None))
    searcher.suggest("a")
    searcher.suggest("b")
    saved = pickle.dumps(searcher)
    assert b"_ot_study" in saved and b"RDBStorage" not in saved  # the live study is not in the pickle
    searcher.on_trial_complete("a", {"epoch": 2, "finished": True, "kept_value": 0.75, "diverged": False})
    searcher.suggest("c")  # asked after the save: only the study knows it

    resumed = pickle.loads(saved)
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{folder.study_file}")
    assert sorted(internals.optuna_trials(resumed)) == ["a", "b", "c"]
    assert internals.told_trials(resumed) == {"a"}  # its end is the study's; telling it again would fail
    resumed.on_trial_result("c", {"epoch": 1, "val_balanced_accuracy": 0.5})
    resumed.on_trial_complete("b", {"epoch": 2, "finished": True, "kept_value": 0.5, "diverged": False})
    states = {t.user_attrs["trial_id"]: t.state.name for t in study.get_trials()}
    assert states == {"a": "COMPLETE", "b": "COMPLETE", "c": "RUNNING"}
    assert study.get_trials()[2].intermediate_values == {1: 0.5}
    study_setup.close_lost(study_setup.StudyPlace.of(cfg, folder))  # the search's end: c was never run
    lost = study.get_trials()[2]
    assert lost.state.name == "FAIL" and "lost" in lost.user_attrs

    # a run folder moved since its search started: refused, nothing made where it was
    folder_path = Path(folder.path)
    folder_path.rename(tmp_path / "moved")
    with pytest.raises(StudyError, match="a run folder moved since cannot be resumed"):
        pickle.loads(saved)
    assert not folder_path.exists()
