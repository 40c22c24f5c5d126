"""Choosing by cross-validation (search.cv): the folds, a cross-validated trial's loop, its
resume after a kill, a failing fold, and the trial's model (the average of its folds) served by
load_model, predict and ONNX export. The loop runs through the small fake session of
test_loop.py; the whole path through Ray is in test_search_e2e.py."""

from __future__ import annotations

import json
import re
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from leuktune.data import folds
from leuktune.data.cache import SPLITS, CachedDataset
from leuktune.data.files import DataError
from leuktune.data.prepare import prepare
from leuktune.evaluation.ensemble import build_ensemble
from leuktune.exporting import export
from leuktune.runfolder import RunFolder
from leuktune.tuning.driver import with_folds
from leuktune.training import checkpoint
from leuktune.training import epoch as epoch_module
from leuktune.training.folds import FoldError, run_folds
from leuktune.trained import FoldModel, TrainedModel, load_model
from test_data_layouts import run_cfg, shifted, write_folder
from test_loop import FakeSession, _cfg, _data, _threads  # noqa: F401 - _threads: an autouse fixture
from test_site_folds import _cfg as _sites_cfg, _labs

TRAIN, VAL, TEST = (SPLITS.index(s) for s in SPLITS)


def _with_patients(patients_per_class: int = 8, cells: int = 3, test_patients: int = 2) -> CachedDataset:
    """Two classes, each patient's cells of one class; the last patients of each class in the test split."""
    labels, groups, splits = [], [], []
    for c in (0, 1):
        for p in range(patients_per_class):
            labels += [c] * cells
            groups += [c * 100 + p] * cells
            splits += [TEST if p >= patients_per_class - test_patients else TRAIN] * cells
    n = len(labels)
    return CachedDataset(images=np.zeros((n, 4, 4, 3), np.uint8), labels=np.array(labels), splits=np.array(splits, np.int8),
                         class_names=("ALL", "healthy"), fingerprint="f", groups=np.array(groups))


def test_folds_hold_out_each_patient_once_keep_the_test_split_and_the_classes_balanced():
    data = _with_patients()
    dealt = folds.cv_folds(data, 3, seed=0)
    assert len(dealt) == 3
    held = [set(np.flatnonzero(f.splits == VAL)) for f in dealt]
    pool = set(np.flatnonzero(data.splits != TEST))
    assert set().union(*held) == pool and sum(map(len, held)) == len(pool)  # every image held out once
    for f in dealt:
        assert (f.splits[data.splits == TEST] == TEST).all()  # the test split untouched
        assert not set(data.groups[f.splits == VAL]) & set(data.groups[f.splits == TRAIN])  # no patient in both
        assert set(data.labels[f.splits == VAL]) == {0, 1}  # every class in every fold
        assert f.fingerprint == data.fingerprint and f.images is data.images
    # the same folds wherever they are dealt again (the trial, its model, the final evaluation)
    again = folds.cv_folds(data, 3, seed=0)
    assert all((a.splits == b.splits).all() for a, b in zip(dealt, again))


@pytest.mark.slow
def test_near_duplicates_are_never_in_two_folds(tmp_path, ray_runtime):
    root = write_folder(tmp_path / "set", classes=("ALL", "CLL", "healthy"), n=10, size=64)
    shifted(Image.open(root / "CLL" / "CLL_3.png"), 2).save(root / "CLL" / "CLL_3_again.jpg", quality=90)
    data, _ = prepare(run_cfg(tmp_path, "data.source=imagefolder", f"data.root={root}",
                              "data.near_duplicate_distance=10"), progress=lambda m: None)
    split = pd.read_parquet(tmp_path / "runs" / "t" / "split.parquet")
    pair = split.index[split["path"].isin([str(root / "CLL" / "CLL_3.png"), str(root / "CLL" / "CLL_3_again.jpg")])]
    assert data.groups[pair[0]] == data.groups[pair[1]]
    for seed in range(3):
        for fold in folds.cv_folds(data, 4, seed=seed):
            assert fold.splits[pair[0]] == fold.splits[pair[1]]


def test_more_folds_than_a_class_has_patients_is_refused_naming_the_class():
    data = _with_patients(patients_per_class=5, test_patients=2)  # 3 patients of each class to deal
    with pytest.raises(DataError, match=r"search.cv 4: class 'ALL' has 3 group\(s\).*at most 3"):
        with_folds(_cfg().model_copy(update={"search": _cfg().search.model_copy(update={"cv": 4})}), data,
                   echo=lambda m: None)
    # auto: 5 folds below AUTO_BELOW images, fewer where a class has fewer patients, off above
    assert folds.resolve("auto", data) == 3 and folds.resolve("auto", _with_patients(8)) == 5
    n = folds.AUTO_BELOW
    big = CachedDataset(**{**_with_patients(8).__dict__, "labels": np.zeros(n, int),
                           "splits": np.zeros(n, np.int8), "groups": np.arange(n)})
    assert folds.resolve("auto", big) is None and folds.resolve(None, data) is None and folds.resolve(3, data) == 3


def _cv(**train):
    cfg = _cfg(**train)
    return cfg.model_copy(update={"search": cfg.search.model_copy(update={"cv": 3})})


def _fold_metrics(folder) -> list[dict]:
    return [json.loads((folder / checkpoint.FOLD.format(f) / checkpoint.META).read_text())["metrics"]
            for f in range(3)]


def test_a_cross_validated_trial_reports_the_mean_of_its_folds_each_epoch(tmp_path):
    session = FakeSession(tmp_path)
    run_folds(_cv(epochs=3, lr=0.01), _data(), session)
    assert [r.epoch for r in session.reports] == [1, 2, 3] and session.reports[-1].finished
    for report in session.reports:
        assert report.val_folds == 3 and report.val_images == 48  # every training and validation image once
        folder = session.checkpoints[report.epoch]
        per_fold = np.array([m["val_loss"] for m in _fold_metrics(folder)])
        assert report.val["loss"] == pytest.approx(per_fold.mean())
        assert report.val_fold_std["loss"] == pytest.approx(per_fold.std(ddof=1))
        assert report.val_se["loss"] == pytest.approx(per_fold.std(ddof=1) / math.sqrt(3))
        assert np.sum(report.val_confusion_matrix) == 48
        assert all(m["epoch"] == report.epoch for m in _fold_metrics(folder))  # all folds at the trial's epoch
        meta = json.loads((folder / checkpoint.META).read_text())
        assert checkpoint.folds_of(folder) == 3 and meta["folds"] == 3 and meta["epoch"] == report.epoch


@pytest.mark.parametrize("cv", [3, "sites"])  # sites: a fold per training lab (test_site_folds)
def test_a_killed_cross_validated_trial_resumes_each_fold_from_its_own_checkpoint(tmp_path, monkeypatch, cv):
    cfg, data = (_cv(epochs=4, lr=0.01), _data()) if cv == 3 else (_sites_cfg(epochs=4, lr=0.01), _labs())
    whole = FakeSession(tmp_path / "whole")
    run_folds(cfg, data, whole)
    # fold 2 fails in epoch 3: the trial fails, naming the fold
    real = epoch_module.train_epoch
    calls = {"n": 0}

    def failing(trial, epoch):
        calls["n"] += 1
        if epoch == 3 and calls["n"] == 2 * 3 + 2:  # epochs 1-2 of 3 folds, then fold 1, then fold 2
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(trial, epoch)

    monkeypatch.setattr("leuktune.training.loop.train_epoch", failing)
    killed = FakeSession(tmp_path / "killed")
    with pytest.raises(FoldError, match=r"fold 2 of 3 failed: RuntimeError: CUDA out of memory"):
        run_folds(cfg, data, killed)
    assert [r.epoch for r in killed.reports] == [1, 2]
    monkeypatch.setattr("leuktune.training.loop.train_epoch", real)
    # restarted from its last checkpoint (epoch 2): every fold goes on from its own part of it
    again = FakeSession(tmp_path / "again", resume_from=killed.checkpoints[2])
    run_folds(cfg, data, again)
    assert [r.epoch for r in again.reports] == [3, 4] and all(r.resumed_from_epoch == 2 for r in again.reports)
    for resumed, straight in zip(again.reports, whole.reports[2:]):
        assert resumed.train_loss == pytest.approx(straight.train_loss, rel=1e-5)
        assert resumed.val["loss"] == pytest.approx(straight.val["loss"], rel=1e-5)
        assert list(resumed.val_sites) == list(straight.val_sites)  # sites: every lab's figures, as without the kill
        for site, figures in resumed.val_sites.items():
            assert figures["val"]["loss"] == pytest.approx(straight.val_sites[site]["val"]["loss"], rel=1e-5)
        assert resumed.val_worst == pytest.approx(straight.val_worst, rel=1e-5, nan_ok=True)
    assert again.reports[-1].kept_epoch == whole.reports[-1].kept_epoch


@pytest.fixture(scope="module")
def fold_trial(tmp_path_factory) -> tuple[CachedDataset, Path]:
    """A cross-validated trial of 3 folds trained for 2 epochs through the loop: (its data, its kept
    checkpoint's folder). Read, never written into."""
    threads = torch.get_num_threads()  # the loop sets its own (the autouse fixture is per test)
    data, session = _data(), FakeSession(tmp_path_factory.mktemp("fold-trial"))
    run_folds(_cv(epochs=2, lr=0.01), data, session)
    torch.set_num_threads(threads)
    return data, session.checkpoints[session.reports[-1].kept_epoch]


def test_the_trial_model_is_the_average_of_its_folds_out_of_fold_on_validation(fold_trial, tmp_path):
    data, folder = fold_trial
    model = load_model(folder, device="cpu")
    assert isinstance(model, FoldModel) and len(model.members) == 3
    members = [load_model(folder / checkpoint.FOLD.format(f), device="cpu") for f in range(3)]
    assert all(isinstance(m, TrainedModel) for m in members)
    # new images: the mean of the three
    pixels = data.pixels()[:6]
    mean = np.mean([m.probabilities(pixels) for m in members], axis=0)
    predicted = model.predict(list(pixels))
    assert np.allclose(predicted[["p_ALL", "p_healthy"]].to_numpy(), mean, atol=1e-6)
    # validation images: each by the fold model that did not train on it
    val = model.split_probabilities(data, "val")
    for member, fold in zip(members, folds.cv_folds(data, 3, seed=0)):
        rows = data.indices("val")
        held = np.isin(rows, fold.indices("val"))
        assert np.allclose(val[held], member.probabilities(data.pixels(), rows=rows[held]), atol=1e-6)
    # exported as one graph that matches PyTorch (export checks it to 1e-4)
    paths = []
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"cell{i}.png")
        paths.append(str(tmp_path / f"cell{i}.png"))
    onnx = export(model, tmp_path / "export", "onnx", images=paths)
    spec = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert onnx.is_file() and len(spec["model"]["members"]) == 3 and spec["max_difference"] < 1e-4
    assert spec["temperature"] == model.temperature == 1.0  # not calibrated until the final evaluation


def test_a_fold_model_is_recognised_and_loaded_from_one_read_of_its_meta(fold_trial, monkeypatch):
    _, folder = fold_trial
    reads, real = [], checkpoint._read

    def counted(location, name=checkpoint.FILE):
        reads.append((str(location).rstrip("/"), name))
        return real(location, name)

    monkeypatch.setattr(checkpoint, "_read", counted)
    model = load_model(folder, device="cpu")
    assert isinstance(model, FoldModel) and len(model.members) == 3
    assert reads.count((str(folder), checkpoint.META)) == 1  # the trial's meta.json; each fold reads its own


def test_an_ensemble_built_of_models_leaves_their_temperatures_as_they_were(fold_trial, tmp_path):
    data, kept = fold_trial
    run = RunFolder.at(tmp_path / "run")
    shutil.copytree(kept, tmp_path / "run" / "tune" / "t0" / "checkpoint_000001")
    trial = load_model(tmp_path / "run" / "tune" / "t0" / "checkpoint_000001", device="cpu")
    models = [trial, trial.members[0]]  # a fold model and a network
    before = [m.temperature for m in models]
    candidates = pd.DataFrame({"trial_id": ["folds", "fold-1"]})
    ensemble = build_ensemble(_cfg(), candidates, models, data, run, temperatures={"folds": 0.7})
    assert [m.temperature for m in models] == before == [1.0, 1.0]  # the caller's models are untouched
    # the ensemble's members are calibrated as it selected them: the temperature given, or one fitted
    assert [m.temperature for m in ensemble.members] == ensemble.record.temperatures
    fitted = dict(zip(ensemble.record.members, ensemble.record.temperatures))
    if "folds" in fitted:
        assert fitted["folds"] == 0.7


def test_a_fold_whose_checkpoint_write_fails_leaves_no_checkpoint_that_cannot_load(tmp_path, monkeypatch):
    cfg, data = _cv(epochs=4, lr=0.01), _data()
    real = checkpoint.write_state
    calls = {"n": 0}

    def full_disk(folder, state):
        calls["n"] += 1
        if calls["n"] == 3 + 2:  # epoch 1's three folds, then epoch 2: fold 1, fold 2
            raise OSError(28, "No space left on device (simulated)")
        return real(folder, state)

    monkeypatch.setattr("leuktune.training.checkpoint.write_state", full_disk)
    killed = FakeSession(tmp_path / "killed")
    run_folds(cfg, data, killed)
    second = killed.reports[1]
    # epoch 2 is reported without a checkpoint, saying which fold's write failed and why
    assert second.epoch == 2 and 2 not in killed.checkpoints
    assert "fold 2 of 3" in second.checkpoint_error and "No space left" in second.checkpoint_error
    # every checkpoint the trial recorded holds all its folds, each loadable, at the trial's epoch
    for epoch, folder in killed.checkpoints.items():
        assert checkpoint.folds_of(folder) == 3
        for f in range(3):
            assert checkpoint.load(checkpoint.fold_location(folder, f))["epoch"] == epoch
    # resumed from the last checkpoint before the failure (epoch 1): every fold goes on in step
    monkeypatch.setattr("leuktune.training.checkpoint.write_state", real)
    again = FakeSession(tmp_path / "again", resume_from=killed.checkpoints[1])
    run_folds(cfg, data, again)
    assert [r.epoch for r in again.reports] == [2, 3, 4] and all(r.resumed_from_epoch == 1 for r in again.reports)
    assert all(m["epoch"] == 4 for m in _fold_metrics(again.checkpoints[4]))


@pytest.mark.parametrize("patients_per_class", [3, 4, 6])  # 1, 2 and 4 patients of each class to deal
def test_the_fold_count_a_refusal_suggests_is_accepted(patients_per_class):
    data = _with_patients(patients_per_class=patients_per_class, test_patients=2)
    fewest = patients_per_class - 2
    with pytest.raises(DataError) as refused:
        folds.check_folds(data, fewest + 1)
    suggested = re.search(r"search.cv to at most (\d+)", str(refused.value))
    if fewest < 2:  # no fold count is possible: none is suggested
        assert suggested is None and "search.cv off" in str(refused.value)
        assert folds.resolve("auto", data) is None
    else:
        folds.check_folds(data, int(suggested.group(1)))  # accepted
        assert len(folds.cv_folds(data, int(suggested.group(1)), seed=0)) == fewest


def test_auto_never_chooses_a_fold_count_the_check_refuses():
    data = _with_patients(patients_per_class=6, test_patients=2)
    # a class with no patient in the training and validation splits: nothing to deal into folds
    data = CachedDataset(**{**data.__dict__, "class_names": ("ALL", "healthy", "CLL")})
    assert folds.resolve("auto", data) is None
