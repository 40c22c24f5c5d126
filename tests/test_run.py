"""A run folder travels: a finished run (with its ensemble and an external set) copied to another
folder under another name, and to a bucket, the original removed; every verb of ``leuktune.Run``
works on the copy, checkpoints stay as their trials wrote them, and nothing is written outside the
copy (this machine's cache of decoded images aside)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import yaml

import leuktune
from leuktune.runfolder import RunFolderError


CLASSES = ("ALL", "CLL", "healthy")


def _files(root: Path, leave_out: Path) -> dict[str, str]:
    """Every file under ``root`` (but ``leave_out``) -> the hash of its bytes."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and leave_out not in p.parents}


def _keys(client) -> dict[str, str]:
    return {o["Key"]: o["ETag"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="runs")
            for o in page.get("Contents", [])}


def _every_verb(run: leuktune.Run, lab: Path, out: Path) -> None:
    """Each verb of the run, with what a user would check of its answer."""
    board = run.leaderboard()
    trials = board[board["trial_id"] != "ensemble"]
    assert len(trials) == 3 and (board["trial_id"] == "ensemble").sum() == 1
    assert trials["checkpoint_uri"].notna().all()
    assert all(str(uri).startswith(run.location.split("?")[0]) for uri in trials["checkpoint_uri"])
    history = run.history()
    assert set(history["trial_id"]) == set(trials["trial_id"])
    best = run.model()
    scored = trials.set_index("trial_id")["test_balanced_accuracy"]
    best_id = trials["trial_id"].iloc[0]
    # the run's data read back where it is now: the same test split, the same figure the evaluation stored
    assert best.evaluate("test")["test_balanced_accuracy"] == pytest.approx(scored[best_id], abs=1e-9)
    assert best.temperature == pytest.approx(trials.set_index("trial_id").loc[best_id, "temperature"])
    images = sorted(str(p) for p in lab.rglob("*.png"))[:5]
    predicted = run.predict(images, trial="ensemble")
    assert predicted["class"].isin(CLASSES).all() and np.allclose(predicted[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1)
    again = run.evaluate(top=1, echo=lambda message: None)
    assert again.set_index("trial_id").loc[best_id, "test_balanced_accuracy"] == pytest.approx(scored[best_id])
    assert set(run.external()["trial_id"]) >= {best_id, "ensemble"}  # the original's, copied
    run.evaluate(external=leuktune.ExternalSet(str(lab), name="lab-b-again"), echo=lambda message: None)
    external = run.external().set_index(["set", "trial_id"])
    assert set(external.index.get_level_values("set")) == {"lab-b", "lab-b-again"}
    assert external.loc[("lab-b-again", best_id), "external_balanced_accuracy"] == pytest.approx(
        external.loc[("lab-b", best_id), "external_balanced_accuracy"])  # the same images, the same model
    html = run.report(out=out / "report", echo=lambda message: None)
    assert "ensemble" in html.read_text() and "lab-b" in html.read_text()
    model_file = run.export(trial="ensemble", out=out / "onnx")
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "probabilities"


@pytest.mark.slow
def test_a_copied_run_folder_opens_and_every_verb_works_writing_only_inside_it(travelled, tmp_path):
    root, copy, _, _, lab, board, searched = travelled
    run = leuktune.Run.open(copy)
    assert run.config.name == "moved-run" and run.config.storage.path == str(copy.parent)
    tune = {p: h for p, h in _files(copy, root / "cache").items() if "/tune/" in p}
    before = _files(root, root / "cache")
    home_cache = Path.home() / ".cache" / "leuktune"  # the cache of a run without data.cache_dir: not this one's
    home_before = sorted(home_cache.rglob("*")) if home_cache.exists() else []
    # the figures the search left are the copy's
    assert board["trial_id"].tolist() == searched["trial_id"].tolist()
    assert np.allclose(board["test_balanced_accuracy"], searched["test_balanced_accuracy"], equal_nan=True)

    _every_verb(run, lab, copy / "mine")
    # the issue's own case: a checkpoint folder of the copy, loaded and evaluated as it is
    checkpoint = board[board["trial_id"] != "ensemble"]["checkpoint_uri"].iloc[0]
    assert leuktune.load_model(checkpoint).evaluate("test")["test_images"] > 0

    after = _files(root, root / "cache")
    outside = [p for p in set(after) - set(before) | {p for p in before if after.get(p) != before[p]}
               if copy not in Path(p).parents]
    assert not outside, f"written outside the run folder: {outside}"
    assert not (root / "written").exists()  # the original's place was never written again
    assert (sorted(home_cache.rglob("*")) if home_cache.exists() else []) == home_before
    assert {p: h for p, h in _files(copy, root / "cache").items() if "/tune/" in p} == tune  # checkpoints untouched
    assert not list(copy.rglob("calibration.json"))


@pytest.mark.slow
def test_a_run_folder_copied_to_a_bucket_opens_there_and_writes_only_under_its_prefix(travelled, tmp_path):
    root, _, client, uri, lab, board, _ = travelled
    run = leuktune.Run.open(uri)
    keys = _keys(client)
    tune = {k: e for k, e in keys.items() if "/tune/" in k}
    _every_verb(run, lab, tmp_path)
    after = _keys(client)
    assert all(key.startswith("team/moved-run/") for key in after), [k for k in after if not k.startswith("team/moved-run/")]
    assert {k: e for k, e in after.items() if "/tune/" in k} == tune
    assert not (root / "written").exists()


def test_a_folder_that_holds_no_run_is_refused_by_name(tmp_path):
    with pytest.raises(RunFolderError, match=f"{tmp_path}: not a run folder"):
        leuktune.Run.open(tmp_path)


def _as_an_earlier_release_wrote_it(folder: Path, original: str) -> None:
    """The run folder as the release before stage tables wrote it: one leaderboard with every
    column and absolute checkpoints of where the run was, the temperatures in the checkpoints."""
    board = pd.read_parquet(folder / "leaderboard.parquet")
    # it named the column checkpoint_uri and kept absolute paths there
    board["checkpoint_uri"] = [None if c is None else f"{original}/{c}" for c in board.pop("checkpoint")]
    board.to_parquet(folder / "leaderboard.parquet", index=False)
    for row in board[board["temperature"].notna() & (board["trial_id"] != "ensemble")].itertuples():
        Path(folder, row.checkpoint_uri.removeprefix(original + "/"), "calibration.json").write_text(
            json.dumps({"temperature": row.temperature, "fitted_on": "val"}))
    record = json.loads((folder / "ensemble.json").read_text())
    record["checkpoints"] = [f"{original}/{c}" for c in record["checkpoints"]]
    record.pop("data_fingerprint")
    (folder / "ensemble.json").write_text(json.dumps(record))
    (folder / "trials.parquet").unlink()
    (folder / "test.parquet").unlink()


@pytest.mark.slow
def test_a_run_folder_of_the_earlier_layout_opens_where_it_is_now_and_takes_new_stages(finished_run, tmp_path):
    copy = finished_run.folder  # as the search left it (test_run's other tests write into travelled's copy)
    board = leuktune.load_leaderboard(copy)
    old = tmp_path / "old-layout"
    shutil.copytree(copy, old)
    _as_an_earlier_release_wrote_it(old, "/cluster/runs/traveller")
    run = leuktune.Run.open(old)
    read = run.leaderboard()
    assert read["trial_id"].tolist() == board["trial_id"].tolist()
    assert all(str(c).startswith(str(old)) for c in read["checkpoint_uri"].dropna())
    trials = read[read["trial_id"] != "ensemble"].set_index("trial_id")
    best = run.model()
    assert best.temperature == pytest.approx(trials["temperature"].iloc[0])  # from its calibration.json
    assert len(run.model(trial="ensemble").members) >= 1
    scored = trials["test_balanced_accuracy"].dropna()
    assert len(scored) == 2
    # a new stage: the first writes each stage's table, keeping every figure the old leaderboard held
    after = run.evaluate(top=1, echo=lambda message: None).set_index("trial_id")
    assert (old / "trials.parquet").exists() and (old / "test.parquet").exists()
    assert np.allclose(after.loc[scored.index, "test_balanced_accuracy"], scored)
    assert after.loc["ensemble", "test_balanced_accuracy"] == pytest.approx(
        read.set_index("trial_id").loc["ensemble", "test_balanced_accuracy"])
    assert all(not str(c).startswith("/") for c in pd.read_parquet(old / "trials.parquet")["checkpoint"].dropna())


@pytest.mark.slow
def test_a_built_in_set_made_again_beside_a_moved_run_is_matched_to_its_split(finished_run, tmp_path):
    """A run searched without a cache of its own keeps the built-in set beside it; moved, the set is
    made again beside the new place (other paths) and its files are matched to the saved split by
    name: the same data, the same fingerprint, the same test figure."""
    copy = finished_run.folder
    board = leuktune.load_leaderboard(copy)
    moved = tmp_path / "laptop" / "run"
    shutil.copytree(copy, moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["data"]["cache_dir"] = None
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    run = leuktune.Run.open(moved)
    best = board[board["trial_id"] != "ensemble"].iloc[0]
    assert run.model().evaluate("test")["test_balanced_accuracy"] == pytest.approx(best["test_balanced_accuracy"])
    assert list((tmp_path / "laptop" / "datasets").glob("synthetic-*"))
    assert (moved / "split.parquet").read_bytes() == (copy / "split.parquet").read_bytes()  # read, not rewritten
