"""Shared fixtures: a real Ray runtime, a real S3 server on loopback and a tiny, fast synthetic experiment."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
from typing import Callable, Iterator

import pytest
import ray

import leuktune
from leuktune.data import synthetic

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


@pytest.fixture(scope="session")
def travelled(tmp_path_factory, ray_runtime):
    """A finished run (3 trials, 2 scored on the test split, their ensemble, an external set) copied
    to ``elsewhere/moved-run`` and to a bucket, then removed: (root, local copy, bucket client, its
    URI, the external set's folder, the original's leaderboard). One search for every module that
    reads a finished run: a test that writes into it works on a copy of its own."""
    root = tmp_path_factory.mktemp("travel")
    written, cache = root / "written", root / "cache"
    board = leuktune.search(overrides=tiny_overrides(written) + [
        "name=traveller", "search.num_samples=3", "search.scheduler.asha=null", "evaluate.top_k=2",
        "evaluate.bootstrap=100", "evaluate.ensemble=3", f"data.cache_dir={cache}"], echo=lambda message: None)
    original = written / "traveller"
    lab = synthetic.generate(root / "lab-b", classes=TRAVELLER_CLASSES, images_per_class=4, image_size=48, seed=9, site=1)
    leuktune.evaluate(original, external=leuktune.ExternalSet(str(lab)), echo=lambda message: None)
    assert (original / "ensemble.json").exists() and (original / "external" / "lab-b.parquet").exists()
    with s3_server("runs") as (client, uri):
        copy = root / "elsewhere" / "moved-run"
        shutil.copytree(original, copy)
        upload(client, "runs", original, "team/moved-run")
        shutil.rmtree(written)  # the original is gone: nothing may need it
        yield root, copy, client, uri("team/moved-run"), lab, leuktune.load_leaderboard(copy), board
