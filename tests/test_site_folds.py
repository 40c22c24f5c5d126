"""Choosing on labs held out (search.cv: sites): a fold per training site, the trial's mean and
worst site, each site's rows in the history and sites.parquet, the refusals, and one
search through Ray from three training labs to a leaderboard, with a fourth lab as the test split.
The loop runs through test_loop.py's small fake session, as test_folds.py's cross-validation does
(whose resume test resumes a sites trial too)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import leuktune
from leuktune import leaderboard
from leuktune.config import ConfigError, load
from leuktune.data import folds
from leuktune.data.cache import SPLITS, CachedDataset
from leuktune.metrics import METRICS
from leuktune.results import EpochReport
from leuktune.training.folds import combined, run_folds
from leuktune.training.phases import Phases
from leuktune.training.verdict import Kept
from leuktune.trained import FoldModel
from leuktune.tuning.driver import with_folds
from test_loop import FakeSession, _threads  # noqa: F401 - _threads: an autouse fixture

TRAIN, VAL, TEST = (SPLITS.index(s) for s in SPLITS)
LABS = ("home", "tehran", "bogota", "far")  # far: the test site
SITES = ("data.sites={home: {source: synthetic}, tehran: {source: synthetic}, bogota: {source: synthetic}, "
         "far: {source: synthetic}}")


def _labs(seed: int = 0) -> CachedDataset:
    """48 training and validation images, 16 at each of home, tehran and bogota, and 8 test images
    of far; two classes a tiny network tells apart; home's row 0 and tehran's row 1 are one group."""
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], 28)
    images = rng.integers(0, 255, (len(labels), 32, 32, 3), dtype=np.uint8)
    images[labels == 1, :16] = 255
    splits = np.array([TRAIN] * 36 + [VAL] * 12 + [TEST] * 8, np.int8)
    sites = np.concatenate([np.arange(48) % 3, np.full(8, 3)])
    groups = np.arange(len(labels))
    groups[1] = 0
    return CachedDataset(images=images, labels=labels, splits=splits, class_names=("ALL", "healthy"),
                         fingerprint="f" * 16, groups=groups, site_names=LABS, sites=sites)


def _cfg(*extra, **train):
    return load(None, ["model.backbone=test_resnet", "model.head=linear", "data.image_size=32", "train.batch_size=8",
                       "resources.cpus_per_worker=1", SITES, "data.test_sites=[far]", "search.cv=sites",
                       "search.metric=val_balanced_accuracy_worst", *extra,
                       *(f"train.{k}={v}" for k, v in train.items())])


def test_each_fold_validates_on_one_lab_trains_on_the_others_and_never_sees_the_test_lab():
    data = _labs()
    dealt = folds.site_folds(data)
    assert len(dealt) == 3 and folds.training_sites(data) == ["home", "tehran", "bogota"]
    validated = np.zeros(len(data.labels), int)
    for code, fold in enumerate(dealt):
        val, train = fold.splits == VAL, fold.splits == TRAIN
        assert set(data.sites[val]) == {code} and code not in set(data.sites[train])  # site-disjoint
        assert 3 not in set(data.sites[val | train]) and (fold.splits[data.splits == TEST] == TEST).all()
        assert not set(data.groups[val]) & set(data.groups[train])  # the group home and tehran share: one side
        validated += val
    assert (validated[data.splits != TEST] == 1).all()  # every training lab's image held out once
    assert dealt[0].splits[1] == folds.LEFT_OUT and dealt[1].splits[0] == folds.LEFT_OUT
    assert dealt[2].splits[0] == dealt[2].splits[1] == TRAIN  # bogota's fold may train on both
    assert all((a.splits == b.splits).all() for a, b in zip(dealt, folds.dealt(data, "sites", seed=9)))


def test_fewer_than_two_training_sites_is_a_config_error_naming_the_sites():
    with pytest.raises(ConfigError, match=r"at least two training sites; data.sites has home to train on "
                                          r"\(test sites: tehran, bogota, far\)"):
        _cfg("data.test_sites=[tehran, bogota, far]")
    with pytest.raises(ConfigError, match=r"data.source synthetic is one site"):
        load(None, ["search.cv=sites"])
    with pytest.raises(ConfigError, match=r"val_balanced_accuracy_worst is the worst held-out site's.*search.cv: sites"):
        load(None, ["search.metric=val_balanced_accuracy_worst", "search.cv=3"])
    # a csv's site column is read with the data: the check before any trial names what it found
    one_lab = _labs()
    one_lab = CachedDataset(**{**one_lab.__dict__, "sites": np.where(one_lab.splits == TEST, 3, 0)})
    csv = load(None, ["data.source=csv", "data.root=/labs.csv", "search.cv=sites"])
    with pytest.raises(ConfigError, match=r"the data has home \(and test site\(s\) tehran, bogota, far\)"):
        with_folds(csv, one_lab, echo=lambda m: None)
    said = []
    assert with_folds(csv, _labs(), echo=said.append).search.cv == "sites" and "home, tehran, bogota" in said[0]


def test_a_sites_trial_reports_the_mean_over_labs_the_worst_lab_and_each_labs_rows(tmp_path):
    session = FakeSession(tmp_path)
    run_folds(_cfg(epochs=3, lr=0.01, keep="best"), _labs(), session)
    assert [r.epoch for r in session.reports] == [1, 2, 3]
    for report in session.reports:
        assert list(report.val_sites) == ["home", "tehran", "bogota"] and report.val_folds == 3
        ba = np.array([s["val"]["balanced_accuracy"] for s in report.val_sites.values()])
        loss = np.array([s["val"]["loss"] for s in report.val_sites.values()])
        flat = report.to_result()
        assert flat["val_balanced_accuracy"] == pytest.approx(ba.mean())
        assert flat["val_balanced_accuracy_worst"] == pytest.approx(ba.min())
        assert flat["val_loss_worst"] == pytest.approx(loss.max())  # the worst loss is the highest
        assert sum(s["val_images"] for s in report.val_sites.values()) == 48
    # the history: a row per trial-epoch and one per lab, read back as the reports were
    rows = [row for r in session.reports for row in leaderboard.held_out.history_rows({"trial_id": "t"}, r)]
    stored = leaderboard.table(rows, leaderboard.HISTORY).to_pandas()
    assert stored.fillna({"site": "-"}).groupby("epoch")["site"].apply(list).tolist() == [
        ["-", "home", "tehran", "bogota"]] * 3
    back = leaderboard.held_out.reports(stored.to_dict("records"))
    assert [b.val_sites["tehran"]["val"] for b in back] == [r.val_sites["tehran"]["val"] for r in session.reports]
    assert len(leaderboard.held_out.trial_epochs(stored)) == 3
    # sites.parquet: the kept epoch's figures of each lab, with their standard errors
    table = leaderboard.table(leaderboard.held_out.kept_rows("e", "t", session.reports), leaderboard.SITES).to_pandas()
    kept = session.reports[session.reports[-1].kept_epoch - 1]
    assert table["site"].tolist() == ["home", "tehran", "bogota"] and (table["kept_epoch"] == kept.epoch).all()
    assert table["val_balanced_accuracy"].min() == pytest.approx(kept.val_worst["balanced_accuracy"])
    assert table["val_balanced_accuracy_se"].notna().all()


def _epoch(epoch: int, ba: float) -> EpochReport:
    return EpochReport(epoch=epoch, validation=epoch, train_loss=0.5, train_images_per_s=10.0, epoch_seconds=1.0,
                       val={**{m: 0.5 for m in METRICS}, "balanced_accuracy": ba}, val_se={m: 0.1 for m in METRICS},
                       val_images=16)


@pytest.mark.parametrize("metric, kept", [("val_balanced_accuracy_worst", 2), ("val_balanced_accuracy", 1)])
def test_the_trial_keeps_the_epoch_its_worst_lab_or_its_mean_says(metric, kept):
    # epoch 1: a mean of 0.767 with a lab at 0.6; epoch 2: every lab at 0.7
    cfg, state, phases = _cfg(f"search.metric={metric}", keep="best"), Kept(), Phases(None)
    first = SimpleNamespace(facts=None)
    for epoch, labs in enumerate([(0.9, 0.6, 0.8), (0.7, 0.7, 0.7)], start=1):
        report, _ = combined(cfg, first, [_epoch(epoch, ba) for ba in labs], state, epoch - 1, 0, phases,
                             ["home", "tehran", "bogota"])
        assert report.val["balanced_accuracy"] == pytest.approx(np.mean(labs))
        assert report.val_worst["balanced_accuracy"] == min(labs) and report.val_worst["loss"] == 0.5
    assert report.kept_epoch == kept


@pytest.mark.slow
def test_a_search_on_three_labs_held_out_in_turn_ranks_by_the_worst_lab(tmp_path, ray_runtime):
    board = leuktune.search("experiments/sites_synthetic.yaml", overrides=[
        f"storage.path={tmp_path}", "data.synthetic.images_per_class=8", "model.backbone=test_resnet",
        "train.epochs=2", "train.batch_size=8", "search.num_samples=2", "search.cv=sites",
        "search.metric=val_balanced_accuracy_worst", "evaluate.top_k=1", "evaluate.ensemble=0",
        "evaluate.bootstrap=100"], echo=lambda m: None)
    run = leuktune.Run.open(tmp_path / "sites-synthetic")
    held = pd.read_parquet(tmp_path / "sites-synthetic" / "sites.parquet")
    assert len(board.query("trial_id != 'ensemble'")) == 2 and len(held) == 2 * 3
    assert set(held["site"]) == {"home", "tehran", "bogota"}  # far, the test lab, is never held out
    per_trial = held.groupby("trial_id")["val_balanced_accuracy"]
    trials = board.set_index("trial_id").loc[per_trial.min().index]
    assert np.allclose(trials["val_balanced_accuracy_worst"], per_trial.min())
    assert np.allclose(trials["val_balanced_accuracy"], per_trial.mean())
    assert board["val_balanced_accuracy_worst"].is_monotonic_decreasing  # ranked by the worst lab
    history = run.history()
    assert set(history["site"].dropna()) == {"home", "tehran", "bogota"} and history["site"].isna().sum() == 4
    model = run.model()  # the best trial: its three lab models as one
    assert isinstance(model, FoldModel) and len(model.members) == 3
    assert pd.notna(board.iloc[0]["test_balanced_accuracy"])  # scored once on far


def test_ties_are_judged_on_the_worst_lab_of_each_resample():
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 20)
    good = np.eye(2)[labels] * 0.8 + 0.1  # every image right
    bad = np.where(rng.random((40, 1)) < 0.4, good[:, ::-1], good)  # a lab where 40% go wrong
    labs = [leaderboard.ValPredictions.of(np.arange(40) + 40 * i, labels, None, p) for i, p in enumerate([good, bad])]
    mean = leaderboard.resample(labs, "val_balanced_accuracy", resamples=200)
    worst = leaderboard.resample(labs, "val_balanced_accuracy_worst", resamples=200)
    assert worst.images == mean.images and (worst.values <= mean.values).all()
    assert worst.values.mean() == pytest.approx(2 * mean.values.mean() - 1, abs=1e-9)  # the good lab scores 1.0
