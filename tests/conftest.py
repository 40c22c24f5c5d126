"""Shared fixtures: a real Ray runtime, a real S3 server on loopback and a tiny, fast synthetic experiment."""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Callable, Iterator

import pytest
import ray


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
