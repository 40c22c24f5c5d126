"""One search per run folder (leuktune.runfolder.lock): searches that start together, locally
and in a bucket (a real S3 server on loopback), and a search that ends after its lock was
taken over."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import s3_server
from leuktune import runfolder
from leuktune.runfolder import RunFolder
from leuktune.runfolder.lock import FolderInUse, SearchLock


def _start_together(folder: RunFolder, searches: int) -> list[SearchLock]:
    """``searches`` threads taking the folder's lock at the same moment; the locks they took."""
    start, taken, lock = threading.Barrier(searches), [], threading.Lock()

    def search():
        attempt = SearchLock(folder)
        start.wait()
        try:
            attempt.__enter__()
        except FolderInUse:
            return
        with lock:
            taken.append(attempt)

    threads = [threading.Thread(target=search) for _ in range(searches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return taken


def _holds_one_at_a_time(folder: RunFolder, rounds: int) -> None:
    for _ in range(rounds):
        taken = _start_together(folder, 6)
        assert len(taken) == 1, f"{len(taken)} searches took the folder at once"
        owner = json.loads(folder.read_text(runfolder.LOCK))
        assert owner["token"] == taken[0].record["token"]  # the lock names the search that holds it
        taken[0].__exit__(None, None, None)
        assert not folder.exists(runfolder.LOCK)


def test_searches_that_start_together_in_one_folder_take_it_one_at_a_time(tmp_path):
    _holds_one_at_a_time(RunFolder(str(tmp_path / "runs"), "cnmc"), rounds=20)


def test_searches_that_start_together_in_a_bucket_take_it_one_at_a_time():
    with s3_server("locks") as (_, uri):
        _holds_one_at_a_time(RunFolder(uri("runs"), "cnmc"), rounds=3)


def test_a_search_ending_after_its_lock_was_taken_over_leaves_the_new_holders_lock(tmp_path):
    folder = RunFolder(str(tmp_path / "runs"), "cnmc")
    first = SearchLock(folder).__enter__()
    # the first search looked dead (its heartbeat stale, say a long pause): a second one took the folder
    stale = {**json.loads(folder.read_text(runfolder.LOCK)), "heartbeat": 0}
    folder.write_text(runfolder.LOCK, json.dumps(stale))
    second = SearchLock(folder).__enter__()
    first.__exit__(None, None, None)
    assert json.loads(folder.read_text(runfolder.LOCK))["token"] == second.record["token"]
    with pytest.raises(FolderInUse):
        SearchLock(folder).__enter__()
    second.__exit__(None, None, None)
    assert not folder.exists(runfolder.LOCK)
