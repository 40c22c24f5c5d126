"""The per-worker loop's decisions (stop, checkpoint, patience, resume) in milliseconds: the
real loop, a real tiny timm model and real checkpoint files, driven through a small fake of
leuktune's own session interface (leuktune.training.session) instead of Ray. That the real
sessions behave the same is shown through Ray in test_trainer.py (slow)."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from leuktune.config import load
from leuktune.data.cache import SPLITS, CachedDataset
from leuktune.results import EpochReport, TrialStatus
from leuktune.training import checkpoint
from leuktune.training import loop
from leuktune.training import trial as trial_setup
from leuktune.training.loop import run_loop
from leuktune.training.verdict import Kept, judge


class StoredCheckpoint:
    """What a session hands back to resume from: ``as_directory`` as Ray's Checkpoint has it."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.folder)


class FakeSession:
    """A session as the loop sees one: one CPU worker that keeps each report and copies each
    reported checkpoint aside, as Ray copies it to storage."""

    rank, world_size, device = 0, 1, torch.device("cpu")

    def __init__(self, store: Path, resume_from: Path | None = None):
        self.store, self.resume_from = store, resume_from
        self.reports: list[EpochReport] = []
        self.checkpoints: dict[int, Path] = {}

    def node(self) -> dict[str, str]:
        return {"node_ip": "127.0.0.1", "node_id": "fake"}

    def checkpoint(self):
        return StoredCheckpoint(self.resume_from) if self.resume_from else None

    def report(self, result: dict, folder: str | None) -> None:
        report = EpochReport.from_result(result)
        self.reports.append(report)
        if folder:
            self.checkpoints[report.epoch] = Path(shutil.copytree(folder, self.store / f"epoch-{report.epoch}"))

    def wrap(self, model):
        return model


@pytest.fixture(autouse=True)
def _threads():
    """The loop sets torch's thread count to the trial's CPUs; the other tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _data(seed: int = 0) -> CachedDataset:
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], 24)
    images = rng.integers(0, 255, (len(labels), 32, 32, 3), dtype=np.uint8)
    images[labels == 1, :16] = 255  # a difference a tiny network can learn in a few epochs
    splits = np.array([SPLITS.index(s) for s in ["train"] * 32 + ["val"] * 16], dtype=np.int8)
    return CachedDataset(images=images, labels=labels, splits=splits, class_names=("ALL", "healthy"),
                         fingerprint="f" * 16)


def _cfg(**train):
    overrides = ["model.backbone=test_resnet", "model.head=linear", "data.image_size=32", "train.batch_size=8",
                 "resources.cpus_per_worker=1", *(f"train.{k}={v}" for k, v in train.items())]
    return load(None, overrides)


def test_the_verdict_on_an_epoch_follows_the_rules_of_train():
    train = _cfg(epochs=10, patience=3, checkpoint_every=4, keep="best").train
    kept = Kept()
    verdicts = [judge(train, kept, epoch, epoch, epoch - 1, score, diverged=False, loss=loss)
                for epoch, (score, loss) in enumerate([(0.5, 0.9), (0.7, 0.5), (0.6, 0.6), (0.7, 0.55), (0.65, 0.6)],
                                                      start=1)]
    assert [v.newly_kept for v in verdicts] == [True, True, False, False, False]
    assert kept.epoch == 2 and kept.score == 0.7  # a tie with a higher loss is not a new best
    # three epochs without a new best end the trial at epoch 5
    assert [v.early_stopped for v in verdicts] == [v.finished for v in verdicts] == [False] * 4 + [True]
    # checkpoints: each new best, every 4th epoch (to resume from), the trial's end
    assert [v.checkpoint_due for v in verdicts] == [True, True, False, True, True]
    # the last epoch finishes a trial and is checkpointed; a diverged epoch is neither scored nor kept
    assert judge(train, Kept(0.9, 1, 1), 10, 10, 9, 0.1, diverged=False).finished
    assert judge(train, Kept(0.9, 1, 1), 10, 10, 9, 0.1, diverged=False).checkpoint_due
    gone = judge(train, Kept(), 3, 3, 2, math.nan, diverged=True)
    assert gone.finished and not gone.checkpoint_due and not gone.newly_kept and not gone.early_stopped


def _kept(keep: str, epochs: list[tuple[float, float, float]]) -> tuple[Kept, list[bool]]:
    """The kept epoch and each epoch's ``newly_kept`` under ``train.keep``, for (score, loss, ece) per epoch."""
    train, kept = _cfg(epochs=len(epochs), keep=keep).train, Kept()
    newly_kept = [judge(train, kept, epoch, epoch, epoch - 1, score, diverged=False, loss=loss, ece=ece).newly_kept
                for epoch, (score, loss, ece) in enumerate(epochs, start=1)]
    return kept, newly_kept


# A small validation split: the metric moves in steps of one image, and trials reach the top step
# early, then again with far lower loss (the case of issue #28: epoch 4 kept, epoch 17 as good).
TIED = [(0.90, 0.50, 0.10), (0.98, 0.40, 0.08), (0.96, 0.20, 0.04), (0.98, 0.30, 0.05), (0.98, 0.30, 0.02),
        (0.98, 0.30, 0.02), (0.98, 0.35, 0.01)]


def test_tied_epochs_are_ranked_by_loss_then_calibration_then_the_later_one():
    kept, newly_kept = _kept("best", TIED)
    # 4: as high, lower loss; 5: same loss, lower ECE; 6: a full tie, later; 7: a higher loss loses
    assert newly_kept == [True, True, False, True, True, True, False]
    assert (kept.epoch, kept.loss, kept.ece) == (6, 0.30, 0.02)
    # a higher metric wins whatever its loss
    kept, _ = _kept("best", [(0.9, 0.1, 0.1), (0.95, 0.9, 0.9)])
    assert kept.epoch == 2
    # patience counts from the epoch that raised the metric (2), not from the ties won since
    train, kept = _cfg(epochs=len(TIED), patience=3, keep="best").train, Kept()
    stopped = [judge(train, kept, epoch, epoch, epoch - 1, score, diverged=False, loss=loss, ece=ece).early_stopped
               for epoch, (score, loss, ece) in enumerate(TIED[:5], start=1)]
    assert stopped == [False] * 4 + [True] and kept.epoch == 5
    # before: the first epoch to reach the top step, an undertrained one
    kept, newly_kept = _kept("first_best", TIED)
    assert kept.epoch == 2 and newly_kept == [True, True] + [False] * 5


def test_keep_last_keeps_every_epoch_in_turn_and_patience_still_counts_from_the_peak():
    kept, newly_kept = _kept("last", TIED)
    assert newly_kept == [True] * len(TIED) and kept.epoch == len(TIED) and kept.loss == 0.35
    # the metric last rose at epoch 2: three validations later patience ends the trial, keeping epoch 5
    train, kept = _cfg(epochs=len(TIED), patience=3, keep="last").train, Kept()
    stopped = [judge(train, kept, epoch, epoch, epoch - 1, score, diverged=False, loss=loss, ece=ece).early_stopped
               for epoch, (score, loss, ece) in enumerate(TIED[:5], start=1)]
    assert stopped == [False] * 4 + [True] and kept.epoch == 5 and kept.peak == 0.98 and kept.raised_at == 2


def test_with_validation_every_few_epochs_patience_and_checkpoints_count_as_they_should():
    train = _cfg(epochs=20, patience=2, checkpoint_every=5, validate_every=3, keep="best").train
    assert [e for e in range(1, 21) if train.validated(e)] == [3, 6, 9, 12, 15, 18, 20] and train.validations == 7
    kept = Kept()
    # validated epochs 3, 6, 9, 12: the best at 6 (validation 2); two validations later, patience ends it
    scores = {3: 0.5, 6: 0.8, 9: 0.7, 12: 0.75}
    verdicts, since = {}, 0
    for validation, epoch in enumerate(scores, start=1):
        verdicts[epoch] = judge(train, kept, epoch, validation, since, scores[epoch], diverged=False)
        since = epoch
    assert [v.early_stopped for v in verdicts.values()] == [False, False, False, True]
    assert kept.epoch == 6 and kept.validation == 2
    # checkpoint_every 5: at the first validated epoch past each multiple of 5 (6, also a best; then 12)
    assert [v.checkpoint_due for v in verdicts.values()] == [True, True, False, True]


def test_the_loop_reports_every_epoch_and_checkpoints_its_bests(tmp_path):
    session = FakeSession(tmp_path)
    run_loop(_cfg(epochs=3, lr=0.01, checkpoint_every=10, keep="best"), _data(), session)
    reports = session.reports
    assert [r.epoch for r in reports] == [1, 2, 3] and reports[-1].finished and not reports[0].finished
    assert all(set(r.val) >= {"balanced_accuracy", "loss"} and r.val_images == 16 for r in reports)
    # each figure with its standard error: of 16 images, one wrong moves the balanced accuracy by 0.06
    # (a split all right has none: every resample is all right too)
    assert all((0.02 < r.val_se["balanced_accuracy"] < 0.2 if r.val["balanced_accuracy"] < 1
                else r.val_se["balanced_accuracy"] == 0) and r.val_se["loss"] > 0 for r in reports)
    assert reports[-1].facts.params > 0 and reports[-1].facts.node_id == "fake"
    assert set(reports[-1].phase_seconds) >= {"data", "build", "restore", "train", "validate", "report"}
    # a checkpoint for every new best and the last epoch, each holding its own epoch
    kept = {r.epoch for r in reports if r.newly_kept_epoch} | {3}
    assert set(session.checkpoints) == kept
    for epoch, folder in session.checkpoints.items():
        assert checkpoint.load(folder)["epoch"] == epoch
    # the best metric; among epochs that tie on it, the lowest validation loss
    best = max(reports, key=lambda r: (r.val["balanced_accuracy"], -r.val["loss"]))
    assert reports[-1].kept_epoch == best.epoch
    assert reports[-1].kept_value == pytest.approx(best.val["balanced_accuracy"])
    assert TrialStatus.of(reports[-1], epochs=3, error=None) == (TrialStatus.COMPLETED, None)


def test_a_trial_imports_and_validates_without_scikit_learn(tmp_path, monkeypatch):
    """scikit-learn costs every trial process about a second of its start (issue 37): neither the
    modules a trial process imports nor its validation need it (search.cv's folds and a probe head
    import it where they use it)."""
    for name in ["sklearn", *(m for m in sys.modules if m.startswith("sklearn."))]:
        monkeypatch.setitem(sys.modules, name, None)  # any import of scikit-learn now fails
    for name in ("leuktune.training.trainer", "leuktune.training.folds", "leuktune.data.folds"):
        if name in sys.modules:  # imported again below; the modules other tests hold come back after
            package, _, child = name.rpartition(".")
            monkeypatch.setattr(sys.modules[package], child, sys.modules[name])
            monkeypatch.delitem(sys.modules, name)
    importlib.import_module("leuktune.training.trainer")  # what a trial process imports for its trainable
    session = FakeSession(tmp_path)
    run_loop(_cfg(epochs=1, lr=0.01), _data(), session)
    assert 0 <= session.reports[-1].val["balanced_accuracy"] <= 1 and session.reports[-1].val_se


def test_by_default_a_trial_keeps_and_reports_the_epoch_it_ended_on(tmp_path):
    session = FakeSession(tmp_path)
    run_loop(_cfg(epochs=3, lr=0.01, checkpoint_every=10), _data(), session)
    last = session.reports[-1]
    assert [r.newly_kept_epoch for r in session.reports] == [1, 2, 3] and set(session.checkpoints) == {1, 2, 3}
    assert last.kept_epoch == 3 and last.kept_value == pytest.approx(last.val["balanced_accuracy"])


def test_patience_ends_a_trial_whose_metric_stopped_moving(tmp_path):
    # A frozen backbone and an lr too small to move the head: the metric stays where it began.
    cfg = _cfg(epochs=6, patience=1, lr=1e-9)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"unfreeze_depth": 0})})
    session = FakeSession(tmp_path)
    run_loop(cfg, _data(), session)
    last = session.reports[-1]
    assert last.epoch == 2 and last.early_stopped and last.finished and session.reports[0].newly_kept_epoch == 1
    assert TrialStatus.of(last, epochs=6, error=None) == (TrialStatus.STOPPED_EARLY, "patience")
    assert 2 in session.checkpoints  # the trial's end is kept


def test_a_loss_that_is_not_a_number_ends_the_trial_as_diverged(tmp_path):
    session = FakeSession(tmp_path)
    run_loop(_cfg(epochs=4, lr=1e30), _data(), session)
    last = session.reports[-1]
    assert last.diverged and last.finished and last.epoch < 4
    assert all(math.isnan(v) for v in last.val.values())
    assert last.epoch not in session.checkpoints
    assert TrialStatus.of(last, epochs=4, error=None) == (TrialStatus.DIVERGED, None)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_restarted_trial_resumes_where_its_checkpoint_left_off(tmp_path, ema):
    cfg, data = _cfg(epochs=4, lr=0.01, checkpoint_every=1, ema=ema), _data()
    whole = FakeSession(tmp_path / "whole")
    run_loop(cfg, data, whole)
    # the same trial restarted from epoch 2's checkpoint: epochs 3 and 4 again, as they were; its
    # meta.json as the release before the renames wrote it ("best" for the kept epoch)
    meta = whole.checkpoints[2] / checkpoint.META
    written = json.loads(meta.read_text())
    meta.write_text(json.dumps({"best" if key == "kept" else key: value for key, value in written.items()}))
    again = FakeSession(tmp_path / "again", resume_from=whole.checkpoints[2])
    run_loop(cfg, data, again)
    assert [r.epoch for r in again.reports] == [3, 4]
    assert all(r.resumed_from_epoch == 2 for r in again.reports)
    for resumed, straight in zip(again.reports, whole.reports[2:]):
        assert resumed.train_loss == pytest.approx(straight.train_loss, rel=1e-5)
        assert resumed.val["loss"] == pytest.approx(straight.val["loss"], rel=1e-5)
    assert again.reports[-1].kept_epoch == whole.reports[-1].kept_epoch


def test_validating_every_few_epochs_reports_those_epochs_and_the_last(tmp_path):
    session = FakeSession(tmp_path)
    run_loop(_cfg(epochs=5, lr=0.01, validate_every=2, checkpoint_every=10), _data(), session)
    assert [(r.epoch, r.validation) for r in session.reports] == [(2, 1), (4, 2), (5, 3)]
    assert session.reports[-1].finished and 5 in session.checkpoints


@pytest.mark.parametrize("during", [True, False], ids=["during validation (GPU)", "after it (CPU)"])
def test_the_checkpoint_is_written_during_validation_on_a_gpu_and_after_it_on_the_cpu(tmp_path, monkeypatch, during):
    events = []
    writing = threading.Event()
    real_write, real_validate = checkpoint.write_state, loop.validate

    def write(folder, state):
        events.append("write")
        writing.set()
        real_write(folder, state)

    def validate(trial):
        if during:  # a write that waited for validation would never start while this waits
            assert writing.wait(timeout=30), "the checkpoint was not being written during validation"
            writing.clear()
        events.append("validated")
        return real_validate(trial)

    monkeypatch.setattr(checkpoint, "write_state", write)
    monkeypatch.setattr(loop, "validate", validate)
    # the loop's own rule says GPU; here the CPU takes either road
    monkeypatch.setattr(loop, "writes_during_validation", lambda trial: during)
    session = FakeSession(tmp_path)
    run_loop(_cfg(epochs=2, lr=0.01), _data(), session)
    assert [r.epoch for r in session.reports] == [1, 2] and set(session.checkpoints) == {1, 2}
    assert events == (["write", "validated"] * 2 if during else ["validated", "write"] * 2)
    assert session.reports[-1].phase_seconds["checkpoint_write"] > 0
    for epoch, folder in session.checkpoints.items():  # the weights of their own epoch, the verdict beside them
        state = checkpoint.load(folder)
        assert state["epoch"] == epoch and state["kept"]["epoch"] == session.reports[epoch - 1].kept_epoch


def test_a_checkpoint_that_cannot_be_written_is_reported_and_the_last_good_one_stays(tmp_path, monkeypatch):
    real_write = checkpoint.write_state
    calls = []

    def failing_second(folder, state):
        calls.append(state["epoch"])
        if state["epoch"] == 2:
            raise OSError(28, "No space left on device")
        real_write(folder, state)

    monkeypatch.setattr(checkpoint, "write_state", failing_second)
    cfg, data = _cfg(epochs=3, lr=0.01, checkpoint_every=1), _data()
    session = FakeSession(tmp_path / "full")
    run_loop(cfg, data, session)
    assert [r.epoch for r in session.reports] == [1, 2, 3]  # the trial went on
    assert "No space left on device" in session.reports[1].checkpoint_error
    assert session.reports[0].checkpoint_error is None and set(session.checkpoints) == {1, 3}
    # a restart after epoch 2 would resume from the last good checkpoint: epoch 1's
    again = FakeSession(tmp_path / "again", resume_from=session.checkpoints[1])
    run_loop(cfg, data, again)
    assert [r.epoch for r in again.reports] == [2, 3] and again.reports[0].resumed_from_epoch == 1


def test_bn_refresh_recomputes_the_statistics_that_validation_uses(tmp_path, monkeypatch):
    def validation_losses(bn_refresh: int, spoil: bool) -> list[float]:
        session = FakeSession(tmp_path / f"{bn_refresh}-{spoil}")
        real = loop.refresh_batchnorm

        def spoiled_first(trial, epoch):
            # running statistics far from any batch's, as a high learning rate leaves them
            for m in trial.state.scored.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.fill_(50.0)
                    m.running_var.fill_(1e-4)
            real(trial, epoch)

        monkeypatch.setattr(loop, "refresh_batchnorm", spoiled_first if spoil else real)
        run_loop(_cfg(epochs=2, lr=0.01, bn_refresh=bn_refresh), _data(), session)
        return [r.val["loss"] for r in session.reports]

    refreshed = validation_losses(2, spoil=False)
    # whatever the running statistics were, the refresh replaces them: the same validation
    assert validation_losses(2, spoil=True) == pytest.approx(refreshed, rel=1e-4)
    # without it, spoiled statistics are what validation uses
    assert all(s > 2 * r for s, r in zip(validation_losses(0, spoil=True), refreshed))


def test_bn_refresh_leaves_a_frozen_stage_its_own_statistics(tmp_path, monkeypatch):
    real_build = trial_setup.build_model

    def pretrained_like(*args, **kwargs):  # statistics that are not BatchNorm's initial ones
        model = real_build(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(7.0)
        return model

    monkeypatch.setattr(trial_setup, "build_model", pretrained_like)
    cfg = _cfg(epochs=1, lr=0.01, bn_refresh=4)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"unfreeze_depth": 1})})
    session = FakeSession(tmp_path)
    run_loop(cfg, _data(), session)
    means = {k: v for k, v in checkpoint.load(session.checkpoints[1])["model"].items() if k.endswith("running_mean")}
    kept = [k for k, v in means.items() if torch.all(v == 7.0)]
    # the frozen stages kept theirs; the top stage's were refreshed
    assert kept and len(kept) < len(means)


def test_a_stain_normalised_model_keeps_its_reference_and_needs_no_file_to_predict_or_export(tmp_path):
    import onnxruntime
    from PIL import Image

    import leuktune
    from leuktune.data import synthetic
    from leuktune.data.decode import resize
    from leuktune.data.stain import from_config
    from leuktune.exporting import STAIN_REFERENCE, export

    home = synthetic.generate(tmp_path / "home", classes=("ALL", "healthy"), images_per_class=2, image_size=48)
    other = synthetic.generate(tmp_path / "other", classes=("ALL", "healthy"), images_per_class=2, image_size=48,
                               seed=4, site=1)
    reference = tmp_path / "reference.png"
    shutil.copy(home / "ALL" / "ALL_0000.png", reference)
    cfg = load(None, ["model.backbone=test_resnet", "model.head=linear", "data.image_size=32", "train.batch_size=8",
                      "resources.cpus_per_worker=1", "train.epochs=1", "train.lr=0.01", "data.stain_normalize=reinhard",
                      f"data.stain_reference={reference}"])
    normalizer = from_config(cfg.data)
    session = FakeSession(tmp_path / "store")
    (tmp_path / "store").mkdir()
    data = _data()
    run_loop(cfg, CachedDataset(images=data.images, labels=data.labels, splits=data.splits,
                                class_names=data.class_names, fingerprint=data.fingerprint,
                                stain_reference=normalizer.pixels), session)
    reference.unlink()  # the run moved to another machine: the reference's file is not there
    model = leuktune.load_model(session.checkpoints[1], device="cpu")
    assert model.stain_normalizer.key == normalizer.key
    images = sorted(str(p) for p in other.rglob("*.png"))
    pixels, rows = model.load_images(images)
    assert rows["error"].isna().all()
    for path, got in zip(images, pixels):
        assert np.array_equal(got, normalizer(resize(Image.open(path).convert("RGB"), 32, "pad")))
    assert model.predict(images)["class"].notna().all()
    # the export carries the reference beside the model, at the input's size, and names it
    exported = export(model, tmp_path / "export", images=images)
    meta = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert meta["input"]["stain_normalize"] == "reinhard" and meta["input"]["stain_reference"] == STAIN_REFERENCE
    assert np.array_equal(np.asarray(Image.open(tmp_path / "export" / STAIN_REFERENCE)), normalizer.pixels)
    assert onnxruntime.InferenceSession(str(exported)).get_inputs()[0].name == "input"
