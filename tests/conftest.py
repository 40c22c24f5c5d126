"""Shared fixtures: a real Ray runtime, a real S3 server on loopback, a real MLflow server, a tiny,
fast synthetic experiment, and the finished runs that many modules read.

A search costs seconds of Ray and training each time, so the suite makes each kind of finished run
once a session and the modules share it: ``tracked_run`` (a search through the command line, followed
by MLflow and TensorBoard, ASHA stopping trials) and ``finished_run``/``travelled`` (a search with
its final evaluation, an ensemble and an external set). They are read-only: a test that writes into
a run (evaluates, scores an external set, exports into it) works on a copy of its own
(``shutil.copytree``), so that no test depends on which ran before it (pytest-randomly shuffles them).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

import pytest
import ray

import leuktune
import leuktune.data.prepare as prepare_module
from leuktune.data import synthetic
from raynodes import free_ports

TRAVELLER_CLASSES = ("ALL", "CLL", "healthy")


@pytest.fixture(scope="session")
def ray_runtime():
    """A real local Ray (2 CPUs, as on CI); started once for the whole session."""
    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR")
    yield
    ray.shutdown()


def tiny_overrides(storage) -> list[str]:
    """A search that finishes in about a minute on 2 cores: 3 classes, 32 px, 2 epochs."""
    return [
        f"storage.path={storage}",
        "name=tiny",
        "data.synthetic.classes=[ALL, CLL, healthy]",
        "data.synthetic.images_per_class=20",
        "data.synthetic.image_size=48",
        "data.image_size=32",
        "model.backbone={choice: [test_resnet, test_efficientnet]}",
        "train.epochs=2",
        "train.batch_size=16",
        "search.num_samples=2",
        "evaluate.ensemble=0",  # test_results builds one; other tests need not pay for it
    ]


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[tuple[object, Callable[[str], str]]]:
    """An S3 server (moto) on 127.0.0.1 with an empty ``bucket``: (a boto3 client, ``uri(prefix)``
    giving the URI of a prefix with the server's address and keys, as storage.path and data.root take it)."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=bucket)

    def uri(prefix: str) -> str:
        return (f"s3://testing:testing@{bucket}/{prefix}?endpoint_override=127.0.0.1:{port}&scheme=http"
                "&region=us-east-1")

    try:
        yield client, uri
    finally:
        server.stop()


def upload(client, bucket: str, folder, prefix: str) -> None:
    """Every file under a local folder into the bucket under ``prefix``."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    """Until ``url`` answers, while ``process`` (the server behind it) lives."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"the server at {url} ended with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"nothing answered at {url}"
            time.sleep(0.5)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1, its runs in SQLite: its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{uri}/health", server)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # its gunicorn takes seconds to end on SIGTERM; nothing is kept
        server.wait(timeout=60)


def search_command_line(overrides: list[str]) -> str:
    """A search through ``python -m leuktune.search``'s main, in this process: what it printed."""
    from leuktune.cli.search import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([a for o in overrides for a in ("--set", o)]) == 0
    return printed.getvalue()


TRACKED_TOP_K = 2  # the trials of tracked_run scored on the test split


@dataclass(frozen=True)
class TrackedRun:
    folder: Path  # read it, never write into it: copy it first
    board: pd.DataFrame  # its leaderboard.parquet as written
    printed: str  # what the command line printed
    mlflow: str  # the MLflow server's URI that followed it


@pytest.fixture(scope="session")
def tracked_run(tmp_path_factory, ray_runtime, mlflow_server) -> TrackedRun:
    """One search through the command line, followed by MLflow and TensorBoard: the end-to-end,
    study and following checks all read it (test_search_e2e, test_follow).

    Four trials one after another; ASHA judges them after one epoch. Half the learning rates
    cannot move the weights, so a trial drawn after a learning one is stopped at its first rung.
    No augmentation: with it, a learning trial of this tiny set is often still at chance after one
    epoch. The best TRACKED_TOP_K trials are scored on the test split."""
    storage = tmp_path_factory.mktemp("tracked") / "runs"
    printed = search_command_line(tiny_overrides(storage) + [
        "search.num_samples=4", "search.max_concurrent=1", "train.lr={choice: [1.0e-9, 0.01]}", "train.batch_size=4",
        "train.warmup_epochs=0", "train.augment_strength=0", "search.scheduler.asha={grace_period: 1, reduction_factor: 2}",
        f"evaluate.top_k={TRACKED_TOP_K}", f"tracking.mlflow={mlflow_server}", "tracking.tensorboard=true"])
    run = storage / "tiny"
    return TrackedRun(run, pd.read_parquet(run / "leaderboard.parquet"), printed, mlflow_server)


@dataclass(frozen=True)
class FinishedRun:
    folder: Path  # a copy of the run as its search and evaluation left it; read it, never write into it
    board: pd.DataFrame  # what leuktune.search returned (its checkpoints where the search wrote them)
    prepared: list  # the experiments whose data was prepared while the search ran (trials and final evaluation)
    lab: Path  # the external set's folder (another lab's stain), scored once as "lab-b"
    root: Path  # where the search wrote (root/written, removed afterwards) and its cache (root/cache)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, ray_runtime) -> FinishedRun:
    """A finished run: 3 trials, the best 2 scored on the test split, their ensemble, an external set
    scored; searched into ``root/written`` and copied to ``root/elsewhere/moved-run`` (travelled's) and
    to a folder of its own (``folder``, that every reader copies), the original then removed: nothing
    may need it. One search for every module that reads a finished run (test_results, test_run,
    test_model_kinds)."""
    root = tmp_path_factory.mktemp("travel")
    written, cache = root / "written", root / "cache"
    prepared, searching = [], [True]
    real_prepare = prepare_module.prepare

    def counted(cfg, *args, **kwargs):
        if searching:  # a module that imported prepare during the search keeps this wrapper: count the search only
            prepared.append(cfg.name)
        return real_prepare(cfg, *args, **kwargs)

    from leuktune.evaluation import driver as evaluation_driver  # imported prepare by name: wrapped there too

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_module, "prepare", counted)
        patch.setattr(evaluation_driver, "prepare", counted)
        board = leuktune.search(overrides=tiny_overrides(written) + [
            "name=traveller", "search.num_samples=3", "search.scheduler.asha=null", "evaluate.top_k=2",
            "evaluate.bootstrap=100", "evaluate.ensemble=3", f"data.cache_dir={cache}"], echo=lambda message: None)
    searching.clear()
    original = written / "traveller"
    lab = synthetic.generate(root / "lab-b", classes=TRAVELLER_CLASSES, images_per_class=4, image_size=48, seed=9, site=1)
    leuktune.evaluate(original, external=leuktune.ExternalSet(str(lab)), echo=lambda message: None)
    assert (original / "ensemble.json").exists() and (original / "external" / "lab-b.parquet").exists()
    shutil.copytree(original, root / "elsewhere" / "moved-run")
    kept = tmp_path_factory.mktemp("finished") / "moved-run"
    shutil.copytree(original, kept)
    shutil.rmtree(written)  # the original is gone: nothing may need it
    return FinishedRun(kept, board, prepared, lab, root)


@pytest.fixture(scope="session")
def travelled(finished_run):
    """The finished run copied to ``elsewhere/moved-run`` and to a bucket, the original removed: (root,
    local copy, bucket client, its URI, the external set's folder, the copy's leaderboard, what the
    search returned). The tests of test_run write into the local copy and the bucket and check that
    nothing else changes; any other reader copies ``finished_run.folder``."""
    root, copy = finished_run.root, finished_run.root / "elsewhere" / "moved-run"
    with s3_server("runs") as (client, uri):
        upload(client, "runs", finished_run.folder, "team/moved-run")
        yield root, copy, client, uri("team/moved-run"), finished_run.lab, leuktune.load_leaderboard(copy), \
            finished_run.board


@dataclass(frozen=True)
class LabsRun:
    folder: Path  # the run (read-only: a test that writes into it copies it)
    board: pd.DataFrame  # what the search returned
    said: list  # what it printed


# Five synthetic labs: home, tehran and bogota to train on, chosen on by search.cv: sites (each
# held out in turn); b and c the test split, whole, c lacking CLL.
SEVERAL_LABS = ("data.sites={home: {source: synthetic, synthetic: {site: 0, seed: 0}}, "
                "tehran: {source: synthetic, synthetic: {site: 1, seed: 1}}, "
                "bogota: {source: synthetic, synthetic: {site: 2, seed: 2}}, "
                "b: {source: synthetic, synthetic: {site: 3, seed: 3}}, "
                "c: {source: synthetic, synthetic: {site: 1, seed: 7, classes: [ALL, healthy]}}}")


@pytest.fixture(scope="session")
def labs_run(tmp_path_factory, ray_runtime) -> LabsRun:
    """One tiny search of several labs through Ray, chosen by the worst held-out training lab and
    evaluated by test lab: it serves the checks of search.cv: sites (test_site_folds) and of every
    evaluation by site (test_evaluation_sites)."""
    root = tmp_path_factory.mktemp("labs")
    said: list[str] = []
    board = leuktune.search(overrides=tiny_overrides(root / "runs") + [
        "name=labs", "data.synthetic.images_per_class=8", "search.scheduler.asha=null", "train.batch_size=8",
        "model.backbone=test_resnet", "evaluate.top_k=2", "evaluate.ensemble=0", "evaluate.bootstrap=100",
        f"data.cache_dir={root / 'cache'}", SEVERAL_LABS, "data.test_sites=[b, c]", "search.cv=sites",
        "search.metric=val_balanced_accuracy_worst"], echo=said.append)
    return LabsRun(root / "runs" / "labs", board, said)
