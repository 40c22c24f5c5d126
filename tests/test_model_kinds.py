"""Every kind of trained model a run can hold, through one protocol: a trial's network, a
cross-validated trial's fold model, the ensemble of trials, the ensemble of fold models, and the
ensemble of a moved run each load, predict, evaluate (the stored test figure again), score an
external set and export (ONNX matching PyTorch), through the API and the command lines. And one
path rule: a checkpoint gives the same model, its fitted temperature included, whether its path is
absolute, relative to the working directory, or a file URI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest

import leuktune
from leuktune.cli.evaluate import main as evaluate_main
from leuktune.cli.export import main as export_main
from leuktune.cli.predict import main as predict_main
from leuktune.trained import EnsembleModel, FoldModel, TrainedModel

from conftest import tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(finished_run, tmp_path_factory):
    """{name: run folder}: ``trials`` (a copy of the shared finished run: networks and their ensemble),
    ``folds`` (a search with search.cv=3 and an ensemble of its fold models), ``moved`` (that run
    copied elsewhere, the original's place never read) and the external set's folder."""
    root = tmp_path_factory.mktemp("kinds")
    lab = finished_run.lab
    shutil.copytree(finished_run.folder, root / "trials")
    lines = []
    board = leuktune.search(overrides=tiny_overrides(root / "searched") + [
        "name=folds", "search.cv=3", "evaluate.top_k=1", "evaluate.ensemble=2", "evaluate.bootstrap=100",
        f"data.cache_dir={root / 'cache'}"], echo=lines.append)
    # a cross-validated search says so, and its trials report the mean over their folds
    assert any("each trial trains 3 models on 3 group-disjoint folds" in line for line in lines)
    trials = board[board["trial_id"] != "ensemble"]
    assert (trials["val_folds"] == 3).all() and trials["val_balanced_accuracy_fold_std"].notna().all()
    history = pd.read_parquet(root / "searched" / "folds" / "history.parquet")
    assert (history["val_folds"] == 3).all() and len(history) == 2 * 2  # two trials, two epochs
    shutil.copytree(root / "searched" / "folds", root / "elsewhere" / "moved-folds")
    return {"trials": root / "trials", "folds": root / "searched" / "folds",
            "moved": root / "elsewhere" / "moved-folds", "lab": lab}


# (run, trial, the class loaded, its kind, how many members)
KINDS = {
    "trial": ("trials", None, TrainedModel, "network", 0),
    "ensemble of trials": ("trials", "ensemble", EnsembleModel, "ensemble", None),
    "fold model": ("folds", None, FoldModel, "folds", 3),
    "ensemble of fold models": ("folds", "ensemble", EnsembleModel, "ensemble", None),
    "ensemble of a moved run": ("moved", "ensemble", EnsembleModel, "ensemble", None),
}


def _test_images(folder: Path, count: int = 4) -> list[str]:
    split = pd.read_parquet(folder / "split.parquet")
    return split[split["split"] == "test"]["path"].head(count).tolist()


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_model_loads_predicts_evaluates_and_exports_through_api_and_cli(runs, kind, tmp_path):
    name, trial, cls, described, count = KINDS[kind]
    folder = runs[name]
    run = leuktune.Run.open(folder)
    board = run.leaderboard().set_index("trial_id", drop=False)
    row = board.loc[trial] if trial else board[board["trial_id"] != "ensemble"].iloc[0]
    model = run.model(trial=trial, device="cpu")
    assert isinstance(model, cls) and model.describe()["kind"] == described
    assert count is None or len(model.members) == count
    # an ensemble of fold models holds fold models, each of three networks
    if kind != "ensemble of trials" and cls is EnsembleModel:
        assert all(isinstance(m, FoldModel) and len(m.networks()) == 3 for m in model.members)
    assert str(model.location).startswith(str(folder))  # read where the run is now
    assert model.temperature == pytest.approx(row["temperature"])  # the evaluation's calibration

    # evaluate: the run's data read back gives the figure the final evaluation stored
    assert model.evaluate("test")["test_balanced_accuracy"] == pytest.approx(row["test_balanced_accuracy"], abs=1e-9)

    # predict: the API's verbs and the command line agree
    images = _test_images(folder)
    predicted = run.predict(images, trial=trial, device="cpu")
    assert predicted["class"].isin(model.classes).all()
    probs = predicted[[f"p_{c}" for c in model.classes]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1) and np.allclose(probs, model.predict(images).filter(like="p_"))
    argv = ["--run", str(folder), *images, "--out", str(tmp_path / "p.csv"), "--device", "cpu"]
    assert predict_main(argv + (["--trial", trial] if trial else [])) == 0
    assert np.allclose(pd.read_csv(tmp_path / "p.csv").filter(like="p_").to_numpy(), probs, atol=1e-5)

    # export: one ONNX graph whose output is what predict gives, by the API and the command line
    exported = run.export(trial=trial, out=tmp_path / "onnx")
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    pixels, _ = model.load_images(images)
    assert np.allclose(session.run(None, {"input": model.model_input(pixels).numpy()})[0], probs, atol=1e-4)
    spec = json.loads((tmp_path / "onnx" / "preprocessing.json").read_text())
    assert spec["model"] == json.loads(json.dumps(model.describe()))
    assert export_main(["--run", str(folder), "--out", str(tmp_path / "cli")] + (["--trial", trial] if trial else [])) == 0
    assert (tmp_path / "cli" / "model.onnx").is_file()


@pytest.mark.parametrize("name", ["trials", "folds", "moved"])
def test_an_external_set_is_scored_by_every_evaluated_model_of_each_kind(runs, name, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(runs[name], folder)  # scoring writes into the run: a copy of its own
    lab = runs["lab"]
    if name == "moved":  # the command line's way
        assert evaluate_main([str(folder), "--external", str(lab), "--device", "cpu"]) == 0
    else:
        leuktune.Run.open(folder).evaluate(external=leuktune.ExternalSet(str(lab), name="lab-c"), device="cpu",
                                           echo=lambda message: None)
    external = leuktune.Run.open(folder).external()
    board = leuktune.load_leaderboard(folder)
    evaluated = set(board.loc[board["test_balanced_accuracy"].notna(), "trial_id"])
    assert "ensemble" in evaluated and set(external["trial_id"]) >= evaluated
    assert external["external_balanced_accuracy"].between(0, 1).all()


def test_a_checkpoint_is_the_same_model_however_its_path_is_written(runs, monkeypatch):
    folder = runs["trials"]
    board = leuktune.load_leaderboard(folder)
    row = board[(board["trial_id"] != "ensemble") & board["temperature"].notna()].iloc[0]
    absolute = Path(row["checkpoint_uri"])
    assert absolute.is_absolute() and row["temperature"] != pytest.approx(1.0)
    monkeypatch.chdir(folder.parent)
    relative = absolute.relative_to(folder.parent)  # as people type it: trials/tune/<trial>/checkpoint_N
    for written in (absolute, str(relative), f"{relative}/checkpoint.pt", f"file://{absolute}", f"{absolute}/"):
        model = leuktune.load_model(written, device="cpu")
        assert model.location == str(absolute), written
        assert model.temperature == pytest.approx(row["temperature"]), written
    monkeypatch.chdir(folder)  # relative to the run, from inside it
    assert leuktune.load_model(absolute.relative_to(folder), device="cpu").temperature == pytest.approx(row["temperature"])



def test_a_run_whose_search_table_says_checkpoint_uri_opens_with_its_models(runs, tmp_path):
    """The releases before this one kept the run-relative checkpoint in trials.parquet as
    ``checkpoint_uri``, and the kept epoch as ``best_epoch`` (``improved_epoch`` in history.parquet)."""
    folder = tmp_path / "run"
    shutil.copytree(runs["trials"], folder)
    today = pd.read_parquet(folder / "trials.parquet")
    table = today.rename(columns={"checkpoint": "checkpoint_uri", "kept_epoch": "best_epoch"})
    table.to_parquet(folder / "trials.parquet", index=False)
    history = pd.read_parquet(folder / "history.parquet")
    history.rename(columns={"newly_kept_epoch": "improved_epoch"}).to_parquet(folder / "history.parquet", index=False)
    run = leuktune.Run.open(folder)
    board = run.leaderboard()
    trials = board[board["trial_id"] != "ensemble"]
    assert trials["checkpoint"].str.startswith("tune/").all()
    assert trials.set_index("trial_id")["kept_epoch"].to_dict() == today.set_index("trial_id")["kept_epoch"].to_dict()
    assert run.history()["newly_kept_epoch"].tolist() == history["newly_kept_epoch"].tolist()
    assert all(str(uri).startswith(str(folder)) for uri in trials["checkpoint_uri"])
    best = trials.iloc[0]
    assert run.model(device="cpu").temperature == pytest.approx(best["temperature"])  # found through the old column
    run.evaluate(top=1, device="cpu", echo=lambda message: None)  # a stage writes today's names
    assert {"checkpoint", "kept_epoch"} <= set(pd.read_parquet(folder / "leaderboard.parquet").columns)
