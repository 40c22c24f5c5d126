"""A run folder in an S3 bucket: a real S3 protocol server (moto) on the loopback interface."""

import pyarrow.fs as pafs
import pytest

import leuktune
from conftest import s3_server, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture()
def bucket():
    """An S3 server on 127.0.0.1 with an empty bucket; the storage URI carries its address and keys."""
    with s3_server("cells") as (_, uri):
        yield uri("runs")


def test_a_search_keeps_its_run_folder_in_the_bucket(bucket, tmp_path, ray_runtime):
    overrides = tiny_overrides("unused") + [
        f"storage.path={bucket}", f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1",
        "search.scheduler.asha=null"]
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
