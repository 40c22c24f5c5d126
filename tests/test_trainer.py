"""The trainer on a real Ray runtime: DDP, resume after a killed worker, checkpoints, evaluation."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from ray import tune
from ray.util.state import get_actor, list_actors

from conftest import tiny_overrides
from leuktune import leaderboard, load_model
from leuktune.config import AugmentConfig, load
from leuktune.data.augment import augment_batch
from leuktune.data.prepare import prepare
from leuktune.metrics import METRICS
from leuktune.runfolder import RunFolder
from leuktune.results import FACTS
from leuktune.data import synthetic
from leuktune.tuning.tuner import build_tuner
from leuktune.training.trainer import concurrent_trials
from leuktune.training import checkpoint
from leuktune.training.balance import class_weights, epoch_order
from leuktune.training.device import prefetched
from leuktune.training.optim import make_optimizer, make_scheduler


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


def test_stain_jitter_changes_each_dye_of_each_sample_and_nothing_else():
    torch.manual_seed(0)
    cell = synthetic.render("MM", 0, 1, 48)
    batch = torch.from_numpy(np.asarray(cell, dtype=np.float32) / 255).permute(2, 0, 1)[None].repeat(8, 1, 1, 1)
    still = AugmentConfig(flip=False, rotate=0, zoom=0, shear=0, color=0)
    assert torch.equal(augment_batch(batch, still), batch)  # stain 0: off
    out = augment_batch(batch, still.model_copy(update={"stain": 0.4}))
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
    # each sample its own stain: their mean colours differ
    means = out.mean(dim=(2, 3))
    assert torch.cdist(means, means).add(torch.eye(8)).min() > 1e-3
    # and nothing moves: the image's structure is where it was
    grey, original = out.mean(dim=1).flatten(1), batch[0].mean(dim=0).flatten()
    assert all(torch.corrcoef(torch.stack([g, original]))[0, 1] > 0.9 for g in grey)
    # an image with no dye stays white
    white = torch.ones(2, 3, 8, 8)
    assert (augment_batch(white, still.model_copy(update={"stain": 0.4})) > 0.85).all()


def test_prefetched_batches_come_in_order_while_the_next_one_loads():
    loading = {i: threading.Event() for i in range(5)}

    def load(i):
        loading[i].set()
        return i * 10

    out = []
    for value in prefetched(load, range(5)):
        out.append(value)
        if value == 0:  # the caller is busy with batch 0 while batch 1 is already loading
            assert loading[1].wait(timeout=10)
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
    cfg = RunFolder.resolved(load(None, tiny_overrides(storage) + [
        "model.backbone=test_resnet", "train.lr=0.003", "search.num_samples=1", "search.scheduler.asha=null"]))
    data, _ = prepare(cfg, progress=lambda message: None)
    return cfg, data


def _trial(cfg, name, *, launcher="auto", workers=1, callbacks=(), **train):
    """One concrete trial's config: nothing searched, as the search would run it."""
    return cfg.model_copy(update={
        "name": name,
        "resources": cfg.resources.model_copy(update={"launcher": launcher, "workers_per_trial": workers}),
        "train": cfg.train.model_copy(update=train)})


def _fit(cfg, data, callbacks=()):
    """The trial through the search's tuner; its leaderboard row and its history."""
    folder = RunFolder.of(cfg)
    results = build_tuner(cfg, data, folder, echo=lambda message: None, callbacks=callbacks).fit()
    assert not results.errors, results.errors
    board = leaderboard.load(folder.uri())  # checkpoints where the run is
    assert len(board) == 1
    return board.iloc[0], folder.read_frame("history.parquet"), results[0].metrics


@pytest.mark.slow
def test_two_worker_ddp_trial_reports_the_same_metrics_as_one_worker_and_checkpoints_evaluate_to_them(tiny_data):
    cfg, data = tiny_data
    one, one_history, one_last = _fit(_trial(cfg, "one-worker"), data)
    # The two-worker trial (Ray Train, DDP over gloo) also takes the other road through the loop:
    # bf16 autocast (on the CPU too when asked), the balanced sampler, one-cycle, label smoothing.
    two, two_history, two_last = _fit(_trial(cfg, "two-workers", workers=2, precision="bf16",
                                             class_balance="sampler", schedule="onecycle", label_smoothing=0.1), data)
    reported = {key for key in one_last if key.startswith(("val_", "train_")) or key in (*FACTS, "inference_ms")}
    assert reported == {key for key in two_last if key.startswith(("val_", "train_")) or key in (*FACTS, "inference_ms")}
    assert one["workers"] == 1 and two["workers"] == 2
    assert one["precision"] == "fp32" and two["precision"] == "bf16"
    for last, history in ((one_last, one_history), (two_last, two_history)):
        # validation covers the whole split, whichever worker scored which images
        assert last["val_images"] == len(data.indices("val"))
        assert np.sum(last["val_confusion_matrix"]) == len(data.indices("val"))
        for m in METRICS:
            assert np.isfinite(last[f"val_{m}"]) or m == "roc_auc"
        assert (history["train_loss"] > 0).all() and (history["train_images_per_s"] > 0).all()
        assert history["epoch"].tolist() == [1, 2]
    # The one-worker trial's kept checkpoint evaluates to what it reported, on validation and test
    reported = one_history.set_index("epoch").loc[one["kept_epoch"]]
    model = load_model(one, device="cpu")
    assert model.classes == data.class_names and model.epoch == one["kept_epoch"]
    state = checkpoint.load(one["checkpoint_uri"])
    assert set(state) >= {"optimizer", "scheduler", "scaler"}
    val = model.evaluate("val", data=data)
    for m in METRICS:
        assert val[f"val_{m}"] == pytest.approx(reported[f"val_{m}"], rel=1e-4, abs=1e-6, nan_ok=True), m
    assert val["val_confusion_matrix"] == [list(r) for r in reported["val_confusion_matrix"]]
    test = model.evaluate("test", data=data)
    assert test["test_images"] == len(data.indices("test")) and "test_f1_weighted" in test
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        load_model(f"{RunFolder.of(cfg).storage}/nowhere")
    with pytest.raises(checkpoint.CheckpointError, match="fingerprint"):  # another split of the data
        model.evaluate("test", data=dataclasses.replace(data, fingerprint="0" * 16))
    # Ray Train keeps the DDP trial's checkpoints apart (trials/<id>/); the leaderboard finds its best
    assert "/trials/" in two["checkpoint_uri"] and "/tune/" in one["checkpoint_uri"]
    reported = two_history.set_index("epoch").loc[two["kept_epoch"]]
    val = load_model(two, device="cpu").evaluate("val", data=data)
    assert val["val_balanced_accuracy"] == pytest.approx(reported["val_balanced_accuracy"], rel=1e-4)


class _KillAfterEpoch(tune.Callback):
    """Runs in the Tune driver: logs each reported (epoch, resumed_from_epoch) to a file and,
    once, when ``epoch``'s checkpoint is stored, kills the process that trains with SIGKILL,
    as a lost node would: the trial's own process (launcher tune) or its Ray Train worker."""

    def __init__(self, epoch: int, log: Path, launcher: str):
        self.epoch, self.log, self.launcher = epoch, log, launcher

    def on_trial_result(self, iteration, trials, trial, result, **info):
        with open(self.log, "a") as f:
            f.write(f"{result['epoch']} {result['resumed_from_epoch']}\n")
        if self.launcher == "train" and result["epoch"] == self.epoch:  # Ray Train stored it before reporting
            self._kill([a.pid for a in list_actors(filters=[("class_name", "=", "RayTrainWorker"),
                                                            ("state", "=", "ALIVE")])])

    def on_trial_save(self, iteration, trials, trial, **info):
        if self.launcher == "tune" and trial.last_result.get("epoch") == self.epoch:
            self._kill([get_actor(trial.temporary_state.ray_actor._actor_id.hex()).pid])

    def _kill(self, pids):
        marker = self.log.with_suffix(".killed")
        if not marker.exists():
            marker.touch()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["tune", "train"])
def test_a_trial_killed_mid_way_resumes_from_its_checkpoint(tiny_data, tmp_path, launcher):
    cfg, data = tiny_data
    log = tmp_path / "reports.txt"
    row, history, _ = _fit(_trial(cfg, f"killed-{launcher}", launcher=launcher, epochs=4), data,
                           callbacks=(_KillAfterEpoch(2, log, launcher),))
    assert (tmp_path / "reports.killed").exists()
    reports = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    # epochs 1-2 from the first process; 3-4 from its replacement, which started from epoch 2's checkpoint
    assert reports == [(1, 0), (2, 0), (3, 2), (4, 2)]
    assert row["status"] == "completed" and row["epochs_run"] == 4
    assert history["epoch"].tolist() == [1, 2, 3, 4] and history["resumed_from_epoch"].tolist() == [0, 0, 2, 2]


@pytest.mark.slow
def test_patience_stops_a_trial_that_stopped_improving_and_a_compiled_model_checkpoints_the_plain_network(tiny_data):
    cfg, data = tiny_data
    # A frozen backbone (its BatchNorm statistics too) and an lr too small to move the head:
    # the predictions, hence the metric, stay what they were after the first epoch. The network is
    # compiled (torch.compile): one trial for two flags that do not meet.
    trial = _trial(cfg, "patient", epochs=6, patience=1, lr=1e-9, compile=True)
    trial = trial.model_copy(update={"model": trial.model.model_copy(update={"unfreeze_depth": 0})})
    row, history, last = _fit(trial, data)
    assert last["early_stopped"] is True and row["epochs_run"] == 2
    assert row["status"] == "stopped_early" and row["stopped_by"] == "patience"
    assert np.isfinite(history["train_loss"]).all()
    # the checkpoint holds the classifier's own weights, loadable without torch.compile
    assert load_model(row, device="cpu").evaluate("val", data=data)["val_images"] == len(data.indices("val"))


@pytest.mark.slow
def test_auto_concurrency_packs_trials_into_the_cluster(ray_runtime):
    # The test cluster has 2 CPUs and no GPU.
    messages = []
    cfg = load(None, ["search.num_samples=8"])
    assert concurrent_trials(cfg, messages.append) == 2  # one CPU a trial
    assert concurrent_trials(load(None, ["search.num_samples=1"]), messages.append) == 1
    assert concurrent_trials(load(None, ["resources.cpus_per_worker=0.5"]), messages.append) == 4
    assert concurrent_trials(load(None, ["search.max_concurrent=3"]), messages.append) == 3
    assert not messages
    # a GPU request the cluster cannot meet yet: every trial asked for (an autoscaler adds what it
    # may), and a warning that says why
    assert concurrent_trials(load(None, ["resources.gpus_per_worker=0.25"]), messages.append) == 4
    assert "0.25 GPU a trial, the cluster has 0" in messages[-1]
