"""A run's models adapted to a new lab with a few of its labelled cells (``Run.adapt``,
``python -m leuktune.adapt``): on the built-in second site (another stain and magnification), the
curve is written, no cell the lab's figures are measured on is used to fit or to choose anything
(each cell's role and the steps that saw it, file by file; the lab's own folder handed back as
unlabelled cells), the run's own models and tables are untouched, and an adapted model of a moved run
loads, predicts as it was scored and exports (ONNX matching PyTorch). Mistakes are refused by name."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch

import leuktune
from leuktune.adapting import MARGIN, Plan, draw
from leuktune.adapting.colour import colour_map, log_statistics
from leuktune.cli.adapt import main as adapt_main
from leuktune.cli.predict import main as predict_main
from leuktune.config import ConfigError
from leuktune.data import synthetic
from leuktune.data.sources import DataError
from leuktune.metrics import classification_metrics
from leuktune.trained import AdaptedModel
from leuktune.trained.adapted import ColourMap

from conftest import TRAVELLER_CLASSES


def _files(root: Path) -> dict[str, str]:
    """Every file of the run but its adapted models -> the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "adapted" not in p.relative_to(root).parts}


@pytest.fixture(scope="module")
def adapted(finished_run, tmp_path_factory):
    """The shared finished run copied, adapted through the command line to a second-site lab with 3
    and 5 labelled cells a class, the lab's whole folder also handed over as unlabelled cells; then
    moved elsewhere (the copy it was adapted in removed): (moved run, lab, hashes before, printed)."""
    root = tmp_path_factory.mktemp("adapt")
    run = root / "run"
    shutil.copytree(finished_run.folder, run)
    lab = synthetic.generate(root / "lab-c", classes=TRAVELLER_CLASSES, images_per_class=12, image_size=48, seed=11,
                             site=1)
    before = _files(run)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert adapt_main([str(run), "--labelled", str(lab), "--per-class", "3", "5", "--unlabelled", str(lab),
                           "--steps", "bn", "colour", "head", "last", "temperature", "--device", "cpu"]) == 0
    after = _files(run)
    shutil.move(run, root / "elsewhere")
    return root / "elsewhere", lab, before, after, printed.getvalue()


@pytest.mark.slow
def test_a_run_adapted_to_a_lab_never_uses_its_test_cells_and_changes_nothing_of_its_own(adapted):
    moved, lab, before, after, printed = adapted
    assert after == before  # the run's models, checkpoints and tables, byte for byte
    run = leuktune.Run.open(moved)
    curve = run.adapted()
    board = run.leaderboard()
    best = board.loc[board["trial_id"] != "ensemble", "trial_id"].iloc[0]
    assert set(zip(curve["per_class"], curve["model"])) == {(n, m) for n in (0, 3, 5) for m in (best, "ensemble")}
    assert (curve["balanced_accuracy"].between(curve["balanced_accuracy_low"], curve["balanced_accuracy_high"])).all()
    for n in (3, 5):
        cells = pd.read_parquet(moved / "adapted" / "lab-c" / str(n) / "cells.parquet")
        test = cells[cells["role"] == "test"]
        # the same held-out cells at every per_class, as many as the curve says, seen by no step
        assert len(test) == 36 - 3 * 5 and (curve["test"] == len(test)).all()
        assert (test["seen_by"] == "").all(), test[test["seen_by"] != ""]
        labelled = cells[cells["role"] == "labelled"]
        assert labelled.groupby("label").size().tolist() == [n] * 3
        assert labelled["seen_by"].str.contains("choose").all() and labelled["seen_by"].str.contains("bn").all()
        # the lab's folder handed back as unlabelled: its test cells were left out of it
        unlabelled = cells[cells["role"] == "unlabelled"]
        assert len(unlabelled) == 36 - len(test) and not set(unlabelled["path"]) & set(test["path"])
        assert set(cells.loc[cells["seen_by"] != "", "path"]) <= set(labelled["path"]) | set(unlabelled["path"])
    assert "unadapted" in printed and "5 a class" in printed
    assert "are cells the lab's figures are measured on" in printed  # the lab's folder as unlabelled: said

    # an adapted model of the moved run: it loads, predicts the lab's test cells as it was scored
    cells = pd.read_parquet(moved / "adapted" / "lab-c" / "5" / "cells.parquet")
    test = cells[cells["role"] == "test"]
    for trial in (None, "ensemble"):
        model = run.model(adapted="lab-c", trial=trial, device="cpu")
        assert isinstance(model, AdaptedModel) and model.record.per_class == 5 and str(moved) in model.location
        row = curve[(curve["per_class"] == 5) & (curve["model"] == (trial or best))].iloc[0]
        assert model.record.steps == (row["steps"].split("+") if row["steps"] != "none" else [])
        probs = run.predict(list(test["path"]), adapted="lab-c", trial=trial, device="cpu").filter(like="p_")
        labels = test["label"].map({c: i for i, c in enumerate(model.classes)}).to_numpy()
        assert classification_metrics(labels, probs.to_numpy())["balanced_accuracy"] == pytest.approx(
            row["balanced_accuracy"], abs=1e-9)
    # the unadapted model is the run's, unchanged
    plain = run.model(device="cpu").predict(list(test["path"])).filter(like="p_").to_numpy()
    row0 = curve[(curve["per_class"] == 0) & (curve["model"] == best)].iloc[0]
    assert classification_metrics(labels, plain)["balanced_accuracy"] == pytest.approx(row0["balanced_accuracy"])


@pytest.mark.slow
def test_an_adapted_model_is_served_by_predict_and_export_and_drawn_in_the_report(adapted, tmp_path):
    moved, lab, *_ = adapted
    run = leuktune.Run.open(moved)
    images = sorted(str(p) for p in lab.rglob("*.png"))[:4]
    assert predict_main(["--run", str(moved), "--adapted", "lab-c", "--per-class", "3", *images, "--out",
                         str(tmp_path / "p.csv"), "--device", "cpu"]) == 0
    model = run.model(adapted="lab-c", per_class=3, device="cpu")
    expected = model.predict(images).filter(like="p_").to_numpy()
    assert np.allclose(pd.read_csv(tmp_path / "p.csv").filter(like="p_").to_numpy(), expected, atol=1e-5)
    for trial in (None, "ensemble"):
        exported = run.export(adapted="lab-c", per_class=3, trial=trial, out=tmp_path / f"onnx-{trial}")
        model = run.model(adapted="lab-c", per_class=3, trial=trial, device="cpu")
        session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
        pixels, _ = model.load_images(images)
        assert np.allclose(session.run(None, {"input": model.model_input(pixels).numpy()})[0],
                           model.predict(images).filter(like="p_").to_numpy(), atol=1e-4)
    html = run.report(out=tmp_path / "report", echo=lambda message: None).read_text()
    assert "Adapted to other labs" in html and (tmp_path / "report" / "adapted_lab-c.png").is_file()


@pytest.mark.slow
def test_a_lab_that_cannot_be_adapted_to_is_refused_by_name(adapted, tmp_path, capsys):
    moved, lab, *_ = adapted
    run = leuktune.Run.open(moved)
    # written once: the same lab's name again
    with pytest.raises(ConfigError, match="adapted/lab-c exists"):
        run.adapt(lab, per_class=3)
    # a class the model does not know, by its name (mapped, it is accepted: then too few cells)
    other = tmp_path / "lab-d"
    shutil.copytree(lab, other)
    (other / "CLL").rename(other / "lymphocyte")
    assert adapt_main([str(moved), "--labelled", str(other), "--per-class", "5"]) == 2
    assert "class 'lymphocyte' is not one the model knows" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"class 'ALL' has 12 cell\(s\); adapting with 8 labelled cells a class "
                                        r"needs at least 13"):
        run.adapt(leuktune.ExternalSet(str(other), classes={"lymphocyte": "CLL"}), per_class=8, echo=lambda m: None)
    assert not (moved / "adapted" / "lab-d").exists()


def test_cells_are_drawn_from_whole_groups_nested_and_the_rest_kept_to_test_on():
    labels = np.repeat(["a", "b"], [12, 14])
    groups = np.arange(26) // 2  # patients of two cells
    d = draw(labels, groups, [2, 4], seed=3)
    assert set(d.labelled[2]) <= set(d.labelled[4]) and len(d.labelled[4]) == 8
    assert not set(groups[d.test]) & set(groups[np.concatenate([d.labelled[4], d.aside])])  # no patient in both
    assert draw(labels, groups, [2, 4], seed=3).labelled[4].tolist() == d.labelled[4].tolist()  # seeded
    assert draw(labels, groups, [2, 4], seed=4).labelled[4].tolist() != d.labelled[4].tolist()
    with pytest.raises(DataError, match=f"class 'a' has 12 cell.s.; adapting with 8 .* at least {8 + MARGIN}"):
        draw(labels, groups, [8], seed=0)
    with pytest.raises(DataError, match="leaves 4 to test on"):
        draw(labels, np.where(labels == "a", np.arange(26) // 4, 100 + np.arange(26)), [5], seed=0)


def test_the_colour_step_undoes_another_labs_gamma_and_gain():
    rng = np.random.default_rng(0)
    home = rng.integers(40, 250, (6, 16, 16, 3), dtype=np.uint8)
    gamma, gain = np.array([1.25, 1.1, 0.85]), np.array([0.92, 0.9, 1.0])  # the synthetic second site's stain
    lab = np.uint8(np.clip(255 * gain * (home / 255) ** gamma, 0, 255))
    fitted = colour_map(log_statistics(lab), log_statistics(home))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (torch.from_numpy(lab).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    back = ColourMap(fitted["scale"], fitted["shift"], mean, std)(x) * 0.25 + 0.5
    assert np.abs(back.permute(0, 2, 3, 1).numpy() * 255 - home).mean() < 1.5  # uint8 rounding of the lab's pixels
    assert np.abs(lab.astype(float) - home).mean() > 10


def test_a_plan_refuses_steps_it_does_not_know_and_alternatives_together():
    with pytest.raises(ConfigError, match="'stain' is not one of bn, colour, head, last, whole, temperature"):
        Plan(steps=("bn", "stain"))
    with pytest.raises(ConfigError, match="at most one of head, last, whole"):
        Plan(steps=("head", "whole"), choose=False)
    names = [c.name for c in Plan(steps=("bn", "head", "temperature")).candidates()]
    assert names == ["none", "bn", "head", "bn+head"]
