"""Every evaluation by site (#39): the test split's figures per lab (test_by_site.parquet), the
leaderboard's test_<metric>_worst, the site of each test prediction, an external set from several
labs, and the report's table and confusion matrix per site. One tiny search of five synthetic labs
(three to train on, two held out whole as the test split, one of them lacking a class: conftest's
labs_run) serves every check of several sites; the session's single-site runs are checked in test_results."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import leuktune
from leuktune.evaluation.bootstrap import metric_rows
from leuktune.evaluation.by_site import site_figures
from leuktune.leaderboard import worst_by_site
from leuktune.metrics import METRICS, classification_metrics, confusion_matrix
from leuktune.report.build import write_report

CLASSES = ("ALL", "CLL", "healthy")


def _predictions(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    probs[np.arange(n), labels] += rng.random(n)  # mostly right, not always
    return labels, probs / probs.sum(axis=1, keepdims=True)


def test_each_site_is_scored_on_its_own_images_and_the_classes_it_has():
    labels, probs = _predictions()
    sites = np.where(np.arange(60) < 35, "home", "far")
    labels[sites == "far"] = np.where(labels[sites == "far"] == 1, 2, labels[sites == "far"])  # far has no CLL
    groups = np.arange(60) // 2
    rows = site_figures("t", labels, probs, groups, sites, CLASSES, resamples=200, seed=0)
    assert [r["site"] for r in rows] == ["home", "far"] and [r["images"] for r in rows] == [35, 25]
    for row in rows:
        at = sites == row["site"]
        expected = classification_metrics(labels[at], probs[at])
        assert {m: row[m] for m in METRICS} == pytest.approx(expected, nan_ok=True)
        assert row["confusion_matrix"] == confusion_matrix(labels[at], probs[at])
        finite = [m for m in METRICS if np.isfinite(row[m])]
        assert all(row[f"{m}_low"] - 1e-9 <= row[m] <= row[f"{m}_high"] + 1e-9 for m in finite)
    far = rows[1]
    assert far["classes_absent"] == ["CLL"] and rows[0]["classes_absent"] == []
    # balanced accuracy over the classes far has: the mean recall of ALL and healthy
    at = sites == "far"
    recall = [np.mean(probs[at][labels[at] == k].argmax(axis=1) == k) for k in (0, 2)]
    assert far["balanced_accuracy"] == pytest.approx(np.mean(recall))
    assert np.isnan(far["roc_auc"])  # undefined without one of the classes, not a number made up


def test_one_site_is_the_whole_split_and_the_worst_site_is_the_weakest():
    labels, probs = _predictions(seed=1)
    groups = np.arange(60)
    [alone] = site_figures("t", labels, probs, groups, np.full(60, "lab"), CLASSES, resamples=100, seed=3)
    whole = metric_rows("t", "plain", labels, probs, groups, resamples=100, seed=3)
    assert [(r["value"], r["low"], r["high"]) for r in whole] == \
        [(alone[m], alone[f"{m}_low"], alone[f"{m}_high"]) for m in METRICS]  # the same draws: the same figures
    rows = pd.DataFrame(site_figures("t", labels, probs, groups, np.array(["a", "b", "c"] * 20), CLASSES,
                                     resamples=20, seed=0))
    worst = worst_by_site(rows).set_index("trial_id")
    assert worst.loc["t", "test_balanced_accuracy_worst"] == rows["balanced_accuracy"].min()
    assert worst.loc["t", "test_loss_worst"] == rows["loss"].max()  # lower is better: its worst is the highest
    assert rows["balanced_accuracy"].nunique() > 1  # the three sites differ, so min is a choice


@pytest.mark.slow
def test_a_search_of_several_labs_is_evaluated_report_and_external_set_by_site(labs_run, tmp_path):
    folder, board, said = tmp_path / "labs", labs_run.board, labs_run.said
    shutil.copytree(labs_run.folder, folder)  # the external set is scored into the run: a copy of its own
    evaluated = board[board["test_balanced_accuracy"].notna()]
    assert len(evaluated) == 2
    predictions = pd.read_parquet(folder / "test_predictions.parquet")
    by_site = pd.read_parquet(folder / "test_by_site.parquet")
    assert set(predictions["site"]) == {"b", "c"} and len(by_site) == 2 * 2
    for row in by_site.itertuples():  # each site's figures are its own predictions', recomputed
        rows = predictions[(predictions["trial_id"] == row.trial_id) & (predictions["site"] == row.site)]
        expected = classification_metrics(rows["label"].to_numpy(), np.stack(rows["probs"].to_numpy()))
        assert {m: getattr(row, m) for m in METRICS} == pytest.approx(expected, nan_ok=True)
        assert row.images == len(rows) and list(row.classes_absent) == (["CLL"] if row.site == "c" else [])
    worst = by_site.groupby("trial_id")["balanced_accuracy"].min()
    assert evaluated.set_index("trial_id")["test_balanced_accuracy_worst"].to_dict() == pytest.approx(worst.to_dict())
    assert any(line.startswith("[leuktune] test split by site, ") and " b " in line for line in said)
    assert "[leuktune] site c is scored on the classes it has: balanced accuracy over ALL, healthy; absent there: " \
           "CLL" in said
    # an external set from two labs: a CSV manifest whose site column names them
    split = pd.read_parquet(folder / "split.parquet")
    test = split[split["split"] == "test"]
    manifest = tmp_path / "two-labs.csv"
    test.assign(site=test["site"].map({"b": "lab-b", "c": "lab-c"}))[["path", "label", "site"]].to_csv(manifest,
                                                                                                     index=False)
    heard = []
    leuktune.evaluate(folder, external=leuktune.ExternalSet(str(manifest), source="csv"), echo=heard.append)
    external = pd.read_parquet(folder / "external" / "two-labs_csv.by_site.parquet")
    assert sorted(set(external["site"])) == ["lab-b", "lab-c"] and set(external["trial_id"]) == set(evaluated["trial_id"])
    # the same images and models as the test split: the same figures per site
    inside = by_site.assign(site=by_site["site"].map({"b": "lab-b", "c": "lab-c"})).set_index(["trial_id", "site"])
    outside = external.set_index(["trial_id", "site"])
    assert outside["images"].to_dict() == inside["images"].to_dict()
    assert outside["balanced_accuracy"].to_dict() == pytest.approx(inside["balanced_accuracy"].to_dict())
    assert any(line.startswith("[leuktune] external set two-labs_csv by site") for line in heard)
    # the report: the table with intervals, and the best trial's confusion matrix at each test site
    md = write_report([folder], tmp_path / "report", echo=lambda m: None).with_suffix(".md").read_text()
    assert "## The test split by site" in md and "Site c is scored on the classes it has" in md
    assert "two-labs_csv by site:" in md
    for site in ("b", "c"):
        with Image.open(tmp_path / "report" / f"confusion_site_{site}.png") as image:
            assert image.format == "PNG"
