"""A search whose driver is killed resumes with every trial exactly once; one search per folder.

One search serves every check: the refusals (no search to resume, a second live search, a
search started again without --resume) come before any Ray work, so they run through the command
line's own function in this process while the searching driver is a process of its own."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray

import leuktune

from conftest import tiny_overrides

pytestmark = pytest.mark.slow

# The kill below needs a window: from a running trial's second stored epoch to its end. Tiny
# trials run an epoch in under 0.1 s, so these trials get more images and epochs (about 0.4 s each here).
EPOCHS = 5


def cli(tmp_path, *extra):
    args = [a for o in tiny_overrides(tmp_path / "runs") for a in ("--set", o)]
    args += ["--set", "search.num_samples=4", "--set", "search.max_concurrent=1", "--set", f"train.epochs={EPOCHS}",
             "--set", "data.synthetic.images_per_class=120",
             "--set", "search.scheduler.asha=null"]
    return [sys.executable, "-m", "leuktune.search", *args, *extra]


def refused(tmp_path, *extra) -> tuple[int, str]:
    """The search command line in this process, which must refuse before any work: (status, stderr)."""
    from leuktune.cli.search import main

    said, ray_before = io.StringIO(), ray.is_initialized()
    with contextlib.redirect_stderr(said), contextlib.chdir(tmp_path):
        status = main(cli(tmp_path, *extra)[3:])
    assert ray.is_initialized() == ray_before  # refused before Ray
    return status, said.getvalue()


def test_a_search_killed_after_its_first_trial_resumes_with_every_trial_once(tmp_path):
    run = tmp_path / "runs" / "tiny"
    status, said = refused(tmp_path, "--resume")
    assert status == 1 and "no search to resume here; start one with" in said
    driver = subprocess.Popen(cli(tmp_path), cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600

    def epochs_stored(part) -> int:
        """The epochs in a trial's history part, read in one read: the search rewrites the part each
        epoch (a new file renamed over it), and a reader that opens it twice, footer then pages, can
        take the footer of one version and the pages of the next. A part gone (its trial ended) has none."""
        try:
            return pq.read_metadata(io.BytesIO(part.read_bytes())).num_rows
        except FileNotFoundError:
            return 0

    def saved_with_a_checkpoint(trial_id: str) -> bool:
        """Tune's saved experiment state names a checkpoint of the trial: what --resume restores it
        from. Killed before Tune saved it, the trial starts again from scratch (every epoch still once,
        but nothing resumed: seen once in a full run)."""
        for state in (run / "tune").glob("experiment_state-*.json"):
            try:
                entries = json.loads(state.read_text())["trial_data"]
            except (OSError, ValueError, KeyError):  # being written
                continue
            if any(f'"trial_id": "{trial_id}"' in str(e) and "checkpoint_0" in str(e) for e in entries):
                return True
        return False

    def midway() -> bool:
        """A trial has finished, and another has stored two epochs and Tune has saved its checkpoint."""
        parts = list((run / "history").glob("*.parquet"))
        return (run / "leaderboard.parquet").exists() and any(
            epochs_stored(p) >= 2 and saved_with_a_checkpoint(p.stem) for p in parts)

    while not (run / "search.lock").exists():
        assert driver.poll() is None and time.monotonic() < deadline, "the search ended before it took its lock"
        time.sleep(0.2)
    # A second search of the same folder while the first lives is refused, naming the first.
    status, said = refused(tmp_path)
    assert status == 1 and "is in use by a live search (pid" in said
    while not midway():
        assert driver.poll() is None and time.monotonic() < deadline, "the search ended before it was midway"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, as a lost machine would go
    driver.wait()
    before = pd.read_parquet(run / "leaderboard.parquet")
    assert 1 <= len(before) < 4

    ended_before = {t.user_attrs["trial_id"]: (t.number, t.state) for t in leuktune.Run.open(run).study().trials
                    if t.state.is_finished()}
    assert ended_before

    # Starting it again without --resume is refused: the folder holds a search.
    status, said = refused(tmp_path)
    assert status == 1 and "already holds a search; --resume" in said
    resumed = subprocess.run(cli(tmp_path, "--resume"), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    board = pd.read_parquet(run / "leaderboard.parquet")
    assert len(board) == 4 and board["trial_id"].is_unique
    assert set(before["trial_id"]) <= set(board["trial_id"])
    assert (board["status"] == "completed").all() and (board["epochs_run"] == EPOCHS).all(), \
        board[["trial_id", "status", "epochs_run", "error"]].to_string()
    history = pd.read_parquet(run / "history.parquet")
    for trial_id, epochs in history.groupby("trial_id")["epoch"]:
        assert sorted(epochs) == list(range(1, EPOCHS + 1)), trial_id  # every epoch once, those before the kill too
    # a trial that was running when the driver died went on from its checkpoint, not from scratch
    assert history["resumed_from_epoch"].max() >= 1
    assert not (run / "search.lock").exists() and not list((run / "history").glob("*.parquet"))

    # The same study went on: the trials it had ended keep their numbers, and every trial is in it once
    # (a trial asked just before the kill, which Tune never recorded, is FAIL and marked lost)
    study = leuktune.Run.open(run).study()
    ran = [t for t in study.trials if "lost" not in t.user_attrs]
    assert sorted(t.user_attrs["trial_id"] for t in ran) == sorted(board["trial_id"])
    assert all(t.state.name == "COMPLETE" for t in ran), [(t.number, t.state.name) for t in study.trials]
    assert all(t.state.name == "FAIL" for t in study.trials if "lost" in t.user_attrs)
    now = {t.user_attrs["trial_id"]: (t.number, t.state) for t in ran}
    assert all(now[trial_id] == ended for trial_id, ended in ended_before.items())
    checkpoints = dict(zip(board["trial_id"], board["checkpoint"]))
    for t in ran:  # each epoch's value once, the epochs of a trial resumed midway included
        assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1)), t.number
        assert t.user_attrs["checkpoint"] == checkpoints[t.user_attrs["trial_id"]].removeprefix(f"{run}/")
