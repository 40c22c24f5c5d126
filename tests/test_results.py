"""After a search: the final evaluation, the chosen trial retrained on folds, the report, predict and export."""

import base64
import io
import json
import shutil
import re

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from PIL import Image

import leuktune
from leuktune import leaderboard
from leuktune.data import synthetic
from conftest import tiny_overrides
from leuktune.metrics import METRICS
from leuktune.metrics.calibration import rescale
from leuktune.evaluation.refit_folds import fold_datasets
from leuktune.evaluation.ensemble import ensemble_evaluation
from leuktune.evaluation.final import evaluable
from leuktune.runfolder import RunFolder
from leuktune.results import EnsembleRecord
from leuktune.trained import EnsembleModel, TrainedModel
from leuktune.cli.evaluate import main as evaluate_main
from leuktune.cli.export import main as export_main
from leuktune.cli.predict import main as predict_main
from leuktune.report.build import write_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(finished_run, tmp_path_factory):
    """A copy of the session's finished run (3 trials, the best 2 scored on the test split, their
    ensemble, an external set) of this module's own: its tests evaluate into it. (folder, leaderboard)."""
    folder = tmp_path_factory.mktemp("results") / "moved-run"
    shutil.copytree(finished_run.folder, folder)
    return folder, leuktune.load_leaderboard(folder)


def _trials(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard's trials, ranked, without the ensemble's row."""
    return board[board["status"] != "ensemble"].reset_index(drop=True)


def test_the_search_prepares_its_data_once_for_trials_and_test_split(finished_run):
    assert finished_run.prepared == ["traveller"]


def test_only_the_top_trials_are_scored_on_the_test_split(run):
    folder, board = run
    trials = _trials(board)
    assert trials["test_accuracy"].notna().tolist() == [True, True, False]
    evaluation = pd.read_parquet(folder / "evaluation.parquet")
    assert set(evaluation["trial_id"]) == {*trials["trial_id"].head(2), "ensemble"}
    assert set(evaluation["variant"]) == {"plain", "flip_tta", "calibrated"}
    predictions = pd.read_parquet(folder / "test_predictions.parquet")
    assert len(predictions) == 3 * trials["test_images"].iloc[0]
    # one site (the built-in set's): each prediction names it, and its figures by site are the whole split's
    assert set(predictions["site"]) == {"synthetic"}
    by_site = pd.read_parquet(folder / "test_by_site.parquet")
    assert sorted(by_site["trial_id"]) == sorted({*trials["trial_id"].head(2), "ensemble"})
    assert set(by_site["site"]) == {"synthetic"} and (by_site["images"] == trials["test_images"].iloc[0]).all()
    scored = board[board["test_accuracy"].notna()]
    for m in METRICS:
        assert scored[f"test_{m}_worst"].tolist() == pytest.approx(scored[f"test_{m}"].tolist(), nan_ok=True), m
    # the temperatures are the evaluation's (test.parquet); the checkpoints stay as their trials wrote them
    tested = pd.read_parquet(folder / "test.parquet").set_index("trial_id")
    for row in trials.head(2).itertuples():
        assert tested.loc[row.trial_id, "temperature"] == pytest.approx(row.temperature)
    assert not list(folder.rglob("calibration.json"))


def test_predictions_are_what_evaluating_the_checkpoint_gives(run, tmp_path):
    folder, board = run
    model = leuktune.load_model(folder)  # the run's best trial
    best = _trials(board).iloc[0]
    assert model.location == best["checkpoint_uri"] and model.temperature == best["temperature"]
    data = model.data()
    split = pd.read_parquet(folder / "split.parquet")
    paths = split["path"].to_numpy()[data.indices("test")].tolist()
    expected = rescale(model.split_probabilities(data, "test"), model.temperature)
    (tmp_path / "broken.png").write_text("not an image")
    table = model.predict(paths + [str(tmp_path / "broken.png")])
    got = table[[f"p_{c}" for c in model.classes]].to_numpy()[:-1]
    assert np.abs(got - expected).max() < 1e-5
    assert table["class"].iloc[:-1].tolist() == [model.classes[i] for i in expected.argmax(axis=1)]
    assert table["error"].iloc[-1].startswith("BadImage") and pd.isna(table["class"].iloc[-1])
    # an array and a PIL image of the same file give its probabilities
    image = Image.open(paths[0])
    both = model.predict([image, np.asarray(image)])
    assert np.allclose(both[[f"p_{c}" for c in model.classes]].to_numpy(), got[[0, 0]], atol=1e-5)
    # the command line: a folder with a bad file in it, to CSV
    images = tmp_path / "new"
    images.mkdir()
    for i, path in enumerate(paths[:3]):
        Image.open(path).save(images / f"cell{i}.png")
    (images / "empty.png").write_bytes(b"")
    (images / "._cell0.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's companion file: not an image
    assert predict_main(["--run", str(folder), str(images), "--out", str(tmp_path / "p.csv")]) == 0
    written = pd.read_csv(tmp_path / "p.csv")
    assert len(written) == 4 and written["error"].notna().sum() == 1 and "zero-byte" in written["error"].dropna().iloc[0]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_real_images(run, tmp_path, fmt):
    folder, board = run
    out = tmp_path / fmt
    assert export_main(["--run", str(folder), "--format", fmt, "--out", str(out)]) == 0
    contract = json.loads((out / "preprocessing.json").read_text())
    assert contract["output"]["classes"] == ["ALL", "CLL", "healthy"] and contract["max_difference"] < 1e-4
    assert contract["input"]["size"] == 32 and len(contract["input"]["mean"]) == 3
    model = leuktune.load_model(_trials(board).iloc[0], device="cpu")
    split = pd.read_parquet(folder / "split.parquet")
    pixels, _ = model.load_images(split[split["split"] == "test"]["path"].head(5).tolist())
    x = model.model_input(pixels)
    expected = rescale(model.probabilities(pixels), model.temperature)
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
    else:
        got = torch.jit.load(str(out / "model.pt"))(x).detach().numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_the_ensemble_is_chosen_on_validation_and_scored_once_on_test(run, monkeypatch):
    folder, board = run
    ensemble, trials = board.set_index("trial_id").loc["ensemble"], _trials(board)
    assert ensemble["status"] == "ensemble" and set(ensemble["members"]) <= set(trials["trial_id"])
    assert sum(ensemble["weights"]) == pytest.approx(1) and all(w > 0 for w in ensemble["weights"])
    # never worse than its best member on the split it was chosen on
    assert ensemble["val_balanced_accuracy"] >= trials["val_balanced_accuracy"].max() - 1e-9
    assert ensemble["test_balanced_accuracy_low"] <= ensemble["test_balanced_accuracy"] <= \
        ensemble["test_balanced_accuracy_high"]
    assert isinstance(leuktune.load_model(board.set_index("trial_id", drop=False).loc["ensemble"]), EnsembleModel)
    # selection reads the validation split only; the test split is read once per member, at the end
    reads = []
    real = TrainedModel.split_probabilities
    monkeypatch.setattr(TrainedModel, "split_probabilities",
                        lambda self, data, split, tta=False: reads.append(split) or real(self, data, split, tta=tta))
    data = leuktune.load_model(folder).data()
    run_folder = RunFolder.existing(folder)
    temperatures = dict(zip(board["trial_id"], board["temperature"]))
    row, _, _ = ensemble_evaluation(run_folder.config(), evaluable(board), data,
                                    pd.read_parquet(folder / "split.parquet"), run_folder, temperatures,
                                    echo=lambda m: None)
    record = leaderboard.ensemble(run_folder)  # the ensemble's own record, written again alike
    assert reads == ["val"] * 3 + ["test"] * len(record.members)  # the 3 trials are the candidates
    assert record.members == list(ensemble["members"]) and record.weights == list(ensemble["weights"])
    assert row.scores["balanced_accuracy"] == ensemble["test_balanced_accuracy"]
    assert all(not c.startswith("/") for c in record.checkpoints)  # relative to the run folder


def test_predict_and_export_of_an_ensemble_are_the_weighted_average_of_its_members(run, tmp_path):
    folder, board = run
    first, second = _trials(board).iloc[0], _trials(board).iloc[1]
    # another ensemble of the run, in a copy of it (its checkpoints relative to the run)
    shutil.copytree(folder, tmp_path / "run")
    copy = RunFolder.existing(tmp_path / "run")
    spec = EnsembleRecord(members=[first["trial_id"], second["trial_id"]], weights=[0.7, 0.3],
                          checkpoints=[copy.relative(first["checkpoint_uri"]), copy.relative(second["checkpoint_uri"])],
                          temperatures=[0.8, 1.5], temperature=1.3)
    assert spec.checkpoints[0].startswith("tune/")
    (tmp_path / "run" / "ensemble.json").write_text(spec.to_json())
    ensemble = leuktune.load_model(tmp_path / "run", trial="ensemble", device="cpu")
    split = pd.read_parquet(folder / "split.parquet")
    paths = split[split["split"] == "test"]["path"].head(6).tolist()
    members = [leuktune.load_model(row, device="cpu") for row in (first, second)]
    pixels, _ = members[0].load_images(paths)
    average = sum(w * rescale(m.probabilities(pixels), t)
                  for w, t, m in zip(spec.weights, spec.temperatures, members))
    expected = rescale(average, spec.temperature)
    got = ensemble.predict(paths)[[f"p_{c}" for c in ensemble.classes]].to_numpy()
    assert np.abs(got - expected).max() < 1e-5
    assert export_main(["--run", str(tmp_path / "run"), "--trial", "ensemble", "--out", str(tmp_path / "onnx")]) == 0
    contract = json.loads((tmp_path / "onnx" / "preprocessing.json").read_text())
    assert [m["weight"] for m in contract["model"]["members"]] == [0.7, 0.3] and contract["max_difference"] < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"input": members[0].model_input(pixels).numpy()})[0]
    assert np.abs(onnx - expected).max() < 1e-4


@pytest.fixture(scope="module")
def refitted(run, tmp_path_factory):
    """A copy of the run with its best trial retrained on 3 folds: (folder, best trial, leaderboard).
    A copy of its own: evaluating the trial again refits its temperature, which other tests compare."""
    original, board = run
    folder = tmp_path_factory.mktemp("refitted") / "moved-run"
    shutil.copytree(original, folder)
    best = _trials(board)["trial_id"].iloc[0]
    return folder, best, leuktune.evaluate(folder, trial=best, refit_folds=3, echo=lambda message: None)


def test_refit_folds_retrains_on_group_disjoint_folds(refitted):
    folder, best, updated = refitted
    row = updated.set_index("trial_id").loc[best]
    per_fold = pd.read_parquet(folder / "refit_folds.parquet")
    assert row["refit_folds"] == 3 and per_fold["fold"].tolist() == [0, 1, 2]
    assert row["refit_balanced_accuracy_mean"] == pytest.approx(per_fold["balanced_accuracy"].mean())
    assert per_fold["images"].sum() == 60  # every image held out once
    model = leuktune.load_model(folder)
    split = pd.read_parquet(folder / "split.parquet")
    folds = fold_datasets(model.data(), split, 3, model.config)
    held = [set(np.flatnonzero(d.splits == 2)) for d in folds]
    assert set().union(*held) == set(range(60)) and sum(map(len, held)) == 60
    for d in folds:  # no group in two of train/val/test
        assert split.assign(s=d.splits).groupby("group")["s"].nunique().max() == 1


def test_the_report_shows_every_figure_as_png(run, refitted, tmp_path):
    _, board = run
    folder = refitted[0]  # the run with its trial retrained on folds
    html = write_report([folder], tmp_path / "report", echo=lambda message: None).read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(images) >= 8 and "<img" in html and html.count("<img") == len(images)
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    md = (tmp_path / "report" / "report.md").read_text()
    for name in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        with Image.open(tmp_path / "report" / name) as image:
            assert image.format == "PNG"
    for text in ("best_by_backbone.png", "Hyperparameter importance", "Class activation maps",
                 "reliability.png", "Retrained on folds", "3 classes", "Flip test-time augmentation"):
        assert text in md or text in html, text
    assert _trials(board)["trial_id"].iloc[0] in md
    assert "The ensemble of the best trials" in md and "ensemble_confusion.png" in md
    assert "by site" not in md and "confusion_site_" not in md  # one site: the whole split's figures are its


def test_each_validation_figure_has_its_standard_error_and_ties_with_the_top_are_marked(run, tmp_path):
    folder, board = run
    trials = _trials(board)
    metric = "val_balanced_accuracy"
    # 12 validation images: one image moves a balanced accuracy by 0.08, so its error is of that order
    assert (trials[f"{metric}_se"].between(0, 0.3) & trials["val_loss_se"].gt(0)).all()
    history = pd.read_parquet(folder / "history.parquet")
    assert history["val_balanced_accuracy_se"].notna().all()
    # ties with the top: by a paired bootstrap of each trial's difference from the top on the same
    # validation images (from the predictions each kept checkpoint holds), tied where its interval holds 0
    top = trials.iloc[0]
    assert top["tied_with_top"] and top["top_difference_low"] == top["top_difference_high"] == 0
    assert trials["tied_by"].eq("paired_bootstrap").all()
    holds = (trials["top_difference_low"] <= 0) & (trials["top_difference_high"] >= 0)
    assert trials["tied_with_top"].astype(bool).tolist() == holds.tolist()
    assert pd.isna(board.loc[board["status"] == "ensemble", "tied_with_top"]).all()
    write_report([folder], tmp_path / "report", echo=lambda message: None)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "tied with top" in md and "minus top (95%)" in md
    tied = int(holds.sum())
    line = (f"{tied} trials (the top included) are tied with the top" if tied > 1
            else "No other trial is tied with the top")
    assert line in md
    assert re.search(rf"paired bootstrap of the difference in {metric} on the same \d+ validation images", md)


def test_the_report_of_a_single_trial_and_of_merged_runs(run, tmp_path, ray_runtime):
    folder, _ = run
    single = leuktune.search(overrides=tiny_overrides(tmp_path / "runs") + [
        "name=single", "search.num_samples=1", "train.epochs=1", "evaluate.top_k=0"], echo=lambda message: None)
    assert len(single) == 1
    from leuktune.cli.report import main as report  # the command line's function (its start: test_structure)

    assert report([str(tmp_path / "runs" / "single")]) == 0
    text = (tmp_path / "runs" / "single" / "report" / "report.md").read_text()
    assert "Hyperparameter importance not shown: 1 finished trial(s)" in text and "python -m leuktune.evaluate" in text
    merged = write_report([folder, tmp_path / "runs" / "single"], tmp_path / "merged", echo=lambda m: None)
    assert "| experiment |" in (tmp_path / "merged" / "report.md").read_text() and merged.is_file()


def cnmc_shaped(root, subjects: int = 6, first: int = 1, site: int = 0):
    """``subjects`` subjects per class of 5 cells each, every subject's cells of one class (C-NMC's layout)."""
    for label, cls, ids in (("all", "ALL", range(first, first + subjects)),
                            ("hem", "healthy", range(first + 50, first + 50 + subjects))):
        folder = root / "training_data" / "fold_0" / label
        folder.mkdir(parents=True)
        for subject in ids:
            for image in range(5):
                synthetic.render(cls, 0, subject * 10 + image, 40, site=site).save(
                    folder / f"UID_{subject}_{image}_1_{label}.bmp")
    return root


def test_patient_level_figures_on_a_cnmc_shaped_set(tmp_path, ray_runtime):
    # 12 subjects of 5 cells each, every subject's cells of one class
    root = cnmc_shaped(tmp_path / "C-NMC_Leukemia")
    printed = []
    leuktune.search(overrides=[f"storage.path={tmp_path / 'runs'}", "name=cnmc", "data.source=cnmc",
                               f"data.root={root}", "data.image_size=32", "model.backbone=test_resnet",
                               "model.pretrained=false", "train.epochs=1", "train.batch_size=8",
                               "search.num_samples=2", "evaluate.top_k=1", "evaluate.bootstrap=200",
                               "evaluate.ensemble=2"], echo=printed.append)
    folder = tmp_path / "runs" / "cnmc"
    split = pd.read_parquet(folder / "split.parquet")
    test_patients = split[split["split"] == "test"]["group"].nunique()
    evaluation = pd.read_parquet(folder / "evaluation.parquet")
    patients = evaluation[evaluation["variant"] == "patient"]
    assert set(patients["trial_id"]) == {_trials(leuktune.load_leaderboard(folder))["trial_id"].iloc[0], "ensemble"}
    assert (patients["groups"] == test_patients).all() and test_patients >= 2
    balanced = patients[patients["metric"] == "balanced_accuracy"].iloc[0]
    assert balanced["low"] <= balanced["value"] <= balanced["high"]
    assert any(f"patient level ({test_patients} patients" in line for line in printed)
    # another lab's C-NMC-shaped set (other subjects, its own stain): patient-level rows there too
    other = cnmc_shaped(tmp_path / "other-lab", subjects=4, first=100, site=1)
    printed.clear()
    leuktune.evaluate(folder, external=leuktune.ExternalSet(str(other), source="cnmc"), echo=printed.append)
    external = pd.read_parquet(folder / "external" / "other-lab.parquet")
    by_patient = external[external["variant"] == "patient"]
    assert set(by_patient["trial_id"]) == set(patients["trial_id"]) and (by_patient["groups"] == 8).all()
    assert (external.loc[external["variant"] == "plain", "images"] == 40).all()
    assert any("8 patients" in line for line in printed if line.startswith("[leuktune] external set other-lab"))
    md = write_report([folder], tmp_path / "report", echo=lambda m: None).with_suffix(".md").read_text()
    assert f"Patient level: {test_patients} patients" in md
    assert "8 patients" in md and "other-lab patient level" in md


def test_a_set_without_patients_says_why_it_has_no_patient_figures(run, tmp_path):
    folder, _ = run
    evaluation = pd.read_parquet(folder / "evaluation.parquet")
    assert not (evaluation["variant"] == "patient").any()
    md = write_report([folder], tmp_path / "report", echo=lambda m: None).with_suffix(".md").read_text()
    assert "No patient-level figures: every group is a single image (the data names no patients)." in md


def test_an_external_set_is_scored_by_the_evaluated_trials_and_the_ensemble(run, tmp_path, capsys):
    folder, board = run
    # another lab: its own stain and magnification, other cells; one of the run's training images
    # copied in (reported), and an unreadable file (named; the run skips none, so it is refused first)
    other = synthetic.generate(tmp_path / "site1", classes=("ALL", "CLL", "healthy"), images_per_class=6,
                               image_size=48, seed=9, site=1)
    split = pd.read_parquet(folder / "split.parquet")
    trained = split[split["split"] == "train"].iloc[0]
    Image.open(trained["path"]).save(other / trained["label"] / "copied.png")
    (other / "ALL" / "broken.png").write_text("not an image")
    assert evaluate_main([str(folder), "--external", str(other)]) == 2
    assert "broken.png" in capsys.readouterr().err
    (other / "ALL" / "broken.png").unlink()
    assert evaluate_main([str(folder), "--external", str(other)]) == 0
    out = capsys.readouterr().out
    assert "identical or near-identical to training images" in out
    metrics = pd.read_parquet(folder / "external" / "site1.parquet")
    evaluated = set(board.loc[board["test_balanced_accuracy"].notna(), "trial_id"])
    assert set(metrics["trial_id"]) == evaluated and "ensemble" in evaluated
    assert (metrics["images"] == 19).all() and (metrics["near_training"] >= 1).all()
    inside = (metrics["low"] <= metrics["value"] + 1e-9) & (metrics["value"] <= metrics["high"] + 1e-9)
    assert inside[metrics["value"].notna()].all()
    predictions = pd.read_parquet(folder / "external" / "site1.predictions.parquet")
    assert len(predictions) == 19 * len(evaluated)
    best = _trials(board).iloc[0]
    model = leuktune.load_model(best, device="cpu")
    got = np.stack(predictions[predictions["trial_id"] == best["trial_id"]]["probs"].to_numpy())
    expected = model.predict(predictions[predictions["trial_id"] == best["trial_id"]]["path"].tolist())
    assert np.abs(got - expected[[f"p_{c}" for c in model.classes]].to_numpy()).max() < 1e-5
    md = write_report([folder], tmp_path / "report", echo=lambda m: None).with_suffix(".md").read_text()
    assert "## External test sets" in md and "site1 balanced accuracy" in md and "by site" not in md
    by_site = pd.read_parquet(folder / "external" / "site1.by_site.parquet")  # one lab: the set's own figures
    assert set(by_site["site"]) == {"site1"} and set(by_site["trial_id"]) == evaluated
    plain = metrics[metrics["variant"] == "plain"].pivot(index="trial_id", columns="metric", values="value")
    assert by_site.set_index("trial_id")["balanced_accuracy"].to_dict() == \
        pytest.approx(plain["balanced_accuracy"].to_dict())


def test_an_external_class_the_model_does_not_know_is_refused_by_name(run, tmp_path, capsys):
    folder, _ = run
    other = synthetic.generate(tmp_path / "lab", classes=("ALL", "CLL", "healthy"), images_per_class=2,
                               image_size=48, seed=3, site=1)
    (other / "healthy").rename(other / "normal")
    assert evaluate_main([str(folder), "--external", str(other)]) == 2
    err = capsys.readouterr().err
    assert "class 'normal' is not one the model knows (its classes: ALL, CLL, healthy)" in err
    assert "--classes 'normal=" in err
    assert evaluate_main([str(folder), "--external", str(other), "--classes", "normal=healthy"]) == 0
    assert set(pd.read_parquet(folder / "external" / "lab.predictions.parquet")["label"]) == {"ALL", "CLL", "healthy"}
