"""A run folder in an S3 bucket: a real S3 protocol server (moto) on the loopback interface."""

import pyarrow.fs as pafs
import pytest

import optuna

import leuktune
from conftest import s3_server, tiny_overrides
from leuktune.runfolder import RunFolder
from leuktune.tuning import study_setup

pytestmark = pytest.mark.slow


@pytest.fixture()
def bucket():
    """An S3 server on 127.0.0.1 with an empty bucket; the storage URI carries its address and keys."""
    with s3_server("cells") as (_, uri):
        yield uri("runs")


def test_a_search_keeps_its_run_folder_in_the_bucket(bucket, tmp_path, ray_runtime):
    overrides = tiny_overrides("unused") + [
        f"storage.path={bucket}", f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1",
        "search.scheduler.asha=null", "tracking.tensorboard=true"]
    board = leuktune.search(overrides=overrides, echo=lambda message: None)
    assert len(board) == 2 and (board["status"] == "completed").all()
    fs, root = pafs.FileSystem.from_uri(bucket)
    stored = {info.path.removeprefix(f"{root}/tiny/") for info in
              fs.get_file_info(pafs.FileSelector(f"{root}/tiny", recursive=True))}
    assert {"config.yaml", "split.parquet", "leaderboard.parquet", "history.parquet"} <= stored
    assert sum(path.endswith("checkpoint.pt") for path in stored) >= 2  # each trial's best
    # the decoded images stay on this machine's disk, not in the bucket
    assert not any("cache" in path for path in stored) and list((tmp_path / "cache").rglob("*.npy"))
    # the leaderboard and the best model read back from the bucket
    assert leuktune.load_leaderboard(f"{bucket.replace('/runs?', '/runs/tiny?')}")["trial_id"].tolist() \
        == board["trial_id"].tolist()
    best = board.iloc[0]
    assert best["checkpoint_uri"].startswith("s3://testing:testing@cells/runs/tiny/")
    model = leuktune.load_model(best, device="cpu")
    assert model.evaluate("val")["val_balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"], rel=1e-4)

    # The study: SQLite on the driver's disk while the search ran, its copy in the bucket after each change
    run = RunFolder.existing(bucket.replace('/runs?', '/runs/tiny?'))
    assert "study.db" in stored and run.study_file.is_relative_to(tmp_path / "cache")
    driver_copy = run.study_file.read_bytes()
    run.study_file.unlink()  # another machine: the study is read from the bucket's copy
    study = leuktune.Run.open(run.uri()).study()
    assert sorted(t.user_attrs["trial_id"] for t in study.trials) == sorted(board["trial_id"])
    assert {t.state.name for t in study.trials} == {"COMPLETE"} and not run.study_file.exists()  # a read writes nothing
    # --resume on a new head starts from the bucket's copy
    study_setup.prepare(run.config(), run, resume=True, echo=lambda message: None)
    resumed = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run.study_file}")
    assert [t.number for t in resumed.trials] == [t.number for t in study.trials] and driver_copy
    # TensorBoard's event files of each trial, copied up as they were written
    assert {p.split("/")[1] for p in stored if p.startswith("tensorboard/") and "events.out.tfevents" in p} \
        == set(board["trial_id"])
