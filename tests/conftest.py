"""Shared fixtures: a real Ray runtime and a tiny, fast synthetic experiment."""

from __future__ import annotations

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
    ]
