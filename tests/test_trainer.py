"""The trainer on a real Ray runtime: DDP, resume after a killed worker, checkpoints, evaluation."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import ray.train
import torch

from conftest import tiny_overrides
from leuktune.config import METRICS, AugmentConfig, load
from leuktune.data.augment import augment_batch
from leuktune.data.prepare import prepare
from leuktune.train import checkpoint
from leuktune.train.balance import class_weights, epoch_order
from leuktune.train.device import prefetched
from leuktune.train.evaluate import evaluate_checkpoint
from leuktune.train.optim import make_optimizer, make_scheduler
from leuktune.train.trainer import make_trainer


def test_augmentation_keeps_shape_and_range_and_differs_per_sample():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 48, 48)
    batch = image.repeat(16, 1, 1, 1)
    out = augment_batch(batch, AugmentConfig(rotate=30, zoom=0.2, shear=10, color=0.2))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0 and out.max() <= 1
    # sixteen copies of one image come out as sixteen different images
    flat = out.flatten(1)
    distances = torch.cdist(flat, flat)
    assert (distances + torch.eye(16) * 1e9).min() > 1e-3
    # strength 0 and no flips: nothing changes
    assert torch.equal(augment_batch(batch, AugmentConfig(flip=False), strength=0.0), batch)
    # flips alone only move pixels: the same values, in another place
    flipped = augment_batch(batch, AugmentConfig(), strength=0.0)
    assert torch.equal(flipped.flatten(1).sort(dim=1).values, batch.flatten(1).sort(dim=1).values)
    assert not all(torch.equal(f, batch[0]) for f in flipped)


def test_prefetched_batches_come_in_order_while_the_next_one_loads():
    loaded = []

    def load(i):
        loaded.append(i)
        return i * 10

    out = []
    for value in prefetched(load, range(5)):
        out.append(value)
        if value == 0:
            time.sleep(0.1)  # the caller is busy with batch 0 ...
            assert 1 in loaded  # ... while batch 1 is already loading
    assert out == [0, 10, 20, 30, 40]
    with pytest.raises(ZeroDivisionError):
        list(prefetched(lambda i: 1 / i, [1, 0]))


def test_warmup_then_cosine_and_onecycle_schedules():
    model = torch.nn.Linear(4, 2)
    for schedule in ("cosine", "onecycle"):
        train = load(None, [f"train.schedule={schedule}", "train.lr=0.01", "train.epochs=4",
                            "train.warmup_epochs=1"]).train
        optimizer = make_optimizer(model, train)
        scheduler = make_scheduler(optimizer, train, steps_per_epoch=10)
        lrs = []
        for _ in range(40):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert lrs[0] == pytest.approx(0.01 / 25, rel=1e-3), schedule  # warm-up starts low
        assert max(lrs) == pytest.approx(0.01, rel=1e-2) and np.argmax(lrs) in (9, 10), schedule
        assert lrs[-1] < 0.001, schedule  # and anneals towards zero


def test_class_weights_and_balanced_sampling_even_out_a_two_to_one_split():
    labels = np.array([0] * 200 + [1] * 100)
    weights = class_weights(labels, 3)  # class 2 has no images
    assert weights[0] * 200 == pytest.approx(weights[1] * 100) and weights[2] == 0
    rows = np.arange(300)
    drawn = epoch_order(rows, labels, 3, "sampler", seed=0, epoch=1)
    share = np.bincount(labels[drawn], minlength=2)[:2] / len(drawn)
    assert abs(share[0] - 0.5) < 0.08
    plain = epoch_order(rows, labels, 3, "none", seed=0, epoch=1)
    assert sorted(plain) == list(rows)  # a permutation: each row once
    assert np.array_equal(plain, epoch_order(rows, labels, 3, "none", seed=0, epoch=1))
    assert not np.array_equal(plain, epoch_order(rows, labels, 3, "none", seed=0, epoch=2))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, ray_runtime):
    storage = tmp_path_factory.mktemp("trainer")
    cfg = load(None, tiny_overrides(storage) + ["model.backbone=test_resnet", "train.lr=0.003"])
    data, _ = prepare(cfg, progress=lambda message: None)
    return cfg, data, storage


def _fit(cfg, data, storage, name, callbacks=None):
    result = make_trainer(cfg, data, str(storage / "trials"), name=name, callbacks=callbacks).fit()
    assert result.error is None, result.error
    return result


def test_two_worker_ddp_trial_reports_the_same_metrics_as_one_worker(tiny_data):
    cfg, data, storage = tiny_data
    one = _fit(cfg, data, storage, "one-worker")
    # The two-worker trial also takes the other road through the loop: bf16 autocast (on the
    # CPU too when asked), the balanced sampler, one-cycle, label smoothing.
    two = _fit(cfg.model_copy(update={
        "resources": cfg.resources.model_copy(update={"workers_per_trial": 2}),
        "train": cfg.train.model_copy(update={"precision": "bf16", "class_balance": "sampler",
                                              "schedule": "onecycle", "label_smoothing": 0.1})}),
        data, storage, "two-workers")
    assert set(one.metrics) == set(two.metrics)
    assert one.metrics["workers"] == 1 and two.metrics["workers"] == 2
    assert one.metrics["precision"] == "fp32" and two.metrics["precision"] == "bf16"
    for result in (one, two):
        # validation covers the whole split, whichever worker scored which images
        assert result.metrics["val_images"] == len(data.indices("val"))
        assert np.sum(result.metrics["val_confusion_matrix"]) == len(data.indices("val"))
        for m in METRICS:
            assert np.isfinite(result.metrics[f"val_{m}"]) or m == "roc_auc"
        assert result.metrics["train_loss"] > 0 and result.metrics["train_images_per_s"] > 0


def test_best_checkpoint_evaluates_to_the_reported_metrics(tiny_data):
    cfg, data, storage = tiny_data
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3})})
    result = _fit(cfg, data, storage, "evaluated")
    best, reported = max(result.best_checkpoints, key=lambda pair: pair[1]["improved_epoch"])
    assert reported["improved_epoch"] == reported["epoch"] >= 1
    state = checkpoint.load(best.path)
    assert state["class_names"] == data.class_names and set(state) >= {"optimizer", "scheduler", "scaler"}
    val = evaluate_checkpoint(best.path, data, "val", device="cpu")
    for m in METRICS:
        assert val[f"val_{m}"] == pytest.approx(reported[f"val_{m}"], rel=1e-4, abs=1e-6, nan_ok=True), m
    assert val["val_confusion_matrix"] == reported["val_confusion_matrix"]
    test = evaluate_checkpoint(best.path, data, "test", device="cpu")
    assert test["test_images"] == len(data.indices("test")) and "test_f1_weighted" in test
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        evaluate_checkpoint(storage / "nowhere", data)
    with pytest.raises(checkpoint.CheckpointError, match="fingerprint"):  # another split of the data
        evaluate_checkpoint(best.path, dataclasses.replace(data, fingerprint="0" * 16), "test")


class _KillWorkerAfterEpoch(ray.train.UserCallback):
    """Runs in the Ray Train controller: logs each reported epoch to a file, and once, after
    ``epoch``, kills the training worker's process with SIGKILL, as a lost node would."""

    def __init__(self, epoch: int, log: Path):
        self.epoch, self.log = epoch, log

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.log, "a") as f:
            f.write(f"{metrics[0]['epoch']} {metrics[0]['resumed_from_epoch']}\n")
        marker = self.log.with_suffix(".killed")
        if metrics[0]["epoch"] == self.epoch and not marker.exists():
            marker.touch()
            from ray.util.state import list_actors

            for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
                os.kill(actor.pid, signal.SIGKILL)


def test_a_trial_killed_mid_way_resumes_from_its_checkpoint(tiny_data, tmp_path):
    cfg, data, storage = tiny_data
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 4})})
    log = tmp_path / "reports.txt"
    # The callback runs in Ray's controller process, which cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    result = _fit(cfg, data, storage, "killed", callbacks=[_KillWorkerAfterEpoch(2, log)])
    assert (tmp_path / "reports.killed").exists()
    reports = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    # epochs 1-2 from the first worker; 3-4 from its replacement, which started from epoch 2's checkpoint
    assert reports == [(1, 0), (2, 0), (3, 2), (4, 2)]
    assert result.metrics["epoch"] == 4 and result.metrics["resumed_from_epoch"] == 2


def test_patience_stops_a_trial_that_stopped_improving(tiny_data):
    cfg, data, storage = tiny_data
    # A frozen backbone (its BatchNorm statistics too) and an lr too small to move the head:
    # the predictions, hence the metric, stay what they were after the first epoch.
    cfg = cfg.model_copy(update={
        "train": cfg.train.model_copy(update={"epochs": 6, "patience": 1, "lr": 1e-9}),
        "model": cfg.model.model_copy(update={"unfreeze_depth": 0})})
    result = _fit(cfg, data, storage, "patient")
    assert result.metrics["early_stopped"] is True and result.metrics["epoch"] == 2
