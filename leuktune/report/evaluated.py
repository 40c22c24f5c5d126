"""The report's sections on what the final evaluation scored: the best model on the test split,
the ensemble, external sets, patient-level figures and the cross-validation."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from leuktune.evaluation.patients import VARIANT, why_not
from leuktune.metrics import METRICS
from leuktune.report import figures
from leuktune.report.cells import with_interval
from leuktune.report.collect import Inputs
from leuktune.report.render import Section
from leuktune.report.sites import external_sites


def test_section(inp: Inputs, out: Path, echo: Callable[[str], None]) -> Section:
    section = Section("The best model on the test split")
    evaluated = inp.trials[inp.trials["test_balanced_accuracy"].notna()]
    if evaluated.empty or inp.predictions.empty:
        return section.add("No trial has been scored on the test split yet: "
                           "python -m leuktune.evaluate <run folder>.")
    best = evaluated.iloc[0]
    classes = sorted(inp.split["label"].unique()) if len(inp.split) else [str(i) for i in
                                                                          range(len(best["test_confusion_matrix"]))]
    rows = inp.predictions[inp.predictions["trial_id"] == best["trial_id"]]
    labels, probs = rows["label"].to_numpy(), np.stack(rows["probs"].to_numpy())
    section.add(f"Trial {best['trial_id']}: test balanced accuracy {with_interval(best, 'balanced_accuracy')} "
                f"on {int(best['test_images'])} images; expected calibration error {best['test_ece']:.3f}, "
                f"{best['test_ece_calibrated']:.3f} after temperature scaling (T = {best['temperature']:.2f}, "
                "fitted on the validation split).",
                figures.confusion(np.array(best["test_confusion_matrix"].tolist()), classes, out / "confusion.png"),
                figures.roc_and_pr(labels, probs, classes, out / "roc_pr.png"),
                figures.reliability_diagram(labels, probs, float(best["temperature"]), out / "reliability.png"))
    tta = inp.evaluation[(inp.evaluation["trial_id"] == best["trial_id"])] if len(inp.evaluation) else inp.evaluation
    if len(tta) and (tta["variant"] == "flip_tta").any():
        wide = tta[tta["metric"].isin(METRICS)].pivot(index="metric", columns="variant", values="value")
        section.add("Flip test-time augmentation, reported apart:", wide[["plain", "flip_tta"]].reset_index().round(4))
    section.add(*patient_level(inp, tta))
    try:
        # grad-cam and torch only for a report that draws class activation maps
        from leuktune.report.cam import class_activation_maps, feature_grid
        from leuktune.trained import load_model

        model = load_model(best, device="cpu").networks()[0]  # a cross-validated trial's: its first fold's
        test = inp.split[inp.split["split"] == "test"]
        section.add(f"Class activation maps (Grad-CAM) of test images, true -> predicted class; each map has the "
                    f"resolution of {model.config.model.backbone}'s last feature map ({feature_grid(model)} at "
                    f"{model.config.data.image_size} px), drawn over the image:",
                    class_activation_maps(model, test, out / "cam.png"))
    except Exception as err:  # noqa: BLE001 - the maps need the images and weights; the rest of the report does not
        echo(f"[leuktune] report: no class activation maps ({type(err).__name__}: {err})")
        section.add(f"No class activation maps: {type(err).__name__}: {err}")
    return section


def ensemble_section(inp: Inputs, out: Path) -> Section | None:
    """The weighted ensemble beside the best single trial: its members and weights, and the
    two scored on the same test split."""
    ensemble = inp.ensemble
    if ensemble is None:
        return None
    trials = inp.trials.set_index("trial_id")
    members = pd.DataFrame({"trial": list(ensemble["members"]), "weight": list(ensemble["weights"])})
    for column in [c for c in ("backbone", "head", inp.metric, "test_balanced_accuracy") if c in trials]:
        members[column] = [trials[column].get(t) for t in members["trial"]]
    evaluated = inp.trials[inp.trials["test_balanced_accuracy"].notna()]
    compared = pd.DataFrame([{"model": name, inp.metric: row[inp.metric],
                              "test balanced accuracy (95% CI)": with_interval(row, "balanced_accuracy"),
                              "test F1 macro (95% CI)": with_interval(row, "f1_macro"),
                              "ECE calibrated": row["test_ece_calibrated"]}
                             for name, row in [("ensemble", ensemble),
                                               *([(f"best trial {evaluated.iloc[0]['trial_id']}", evaluated.iloc[0])]
                                                 if len(evaluated) else [])]]).round(4)
    section = Section("The ensemble of the best trials").add(
        f"Greedy selection with replacement (Caruana et al. 2004) over the validation-split probabilities of the "
        f"best trials, each calibrated by its own temperature; the average is calibrated on the validation split "
        f"(T = {ensemble['temperature']:.2f}) and scored once on the test split.", members.round(4), compared)
    rows = inp.predictions[inp.predictions["trial_id"] == ensemble["trial_id"]] if len(inp.predictions) else []
    if len(rows):
        classes = sorted(inp.split["label"].unique()) if len(inp.split) else \
            [str(i) for i in range(len(ensemble["test_confusion_matrix"]))]
        section.add(figures.confusion(np.array(ensemble["test_confusion_matrix"].tolist()), classes,
                                      out / "ensemble_confusion.png"))
    ensemble_rows = inp.evaluation[inp.evaluation["trial_id"] == ensemble["trial_id"]] if len(inp.evaluation) else \
        inp.evaluation
    if len(ensemble_rows) and (ensemble_rows["variant"] == VARIANT).any():  # why there are none: said above
        section.add(*patient_level(inp, ensemble_rows))
    return section


def external_section(inp: Inputs) -> Section | None:
    """Each external set beside the internal test figures: does the model hold at another lab?"""
    if inp.external.empty:
        return None
    section = Section("External test sets").add(
        "The evaluated trials and the ensemble on other datasets (another lab, microscope or stain), read as the "
        "run's images were; 95% intervals from resampling the set's groups.")
    internal = inp.board.set_index("trial_id")
    for name, rows in inp.external.groupby("set", sort=False):
        first = rows.iloc[0]
        notes = [f"{int(first['images'])} images ({first['source']}, {first['root']})"]
        if first["rejected"]:
            notes.append(f"{int(first['rejected'])} file(s) rejected")
        if first["near_training"]:
            notes.append(f"WARNING: {int(first['near_training'])} identical or near-identical to training images")
        balanced = rows[rows["metric"] == "balanced_accuracy"]
        images = balanced[balanced["variant"] == "plain"]
        patients = balanced[balanced["variant"] == VARIANT].set_index("trial_id")
        table = pd.DataFrame({
            "model": images["trial_id"],
            "internal test balanced accuracy": [with_interval(internal.loc[t], "balanced_accuracy")
                                                if t in internal.index else "" for t in images["trial_id"]],
            f"{name} balanced accuracy": [f"{v:.3f} ({lo:.3f}-{hi:.3f})"
                                          for v, lo, hi in zip(images["value"], images["low"], images["high"])]})
        if len(patients):  # the set's groups are patients: one prediction each, as in the final evaluation
            notes.append(f"{int(patients['groups'].iloc[0])} patients")
            table[f"{name} patient level"] = [f"{patients.loc[t, 'value']:.3f} ({patients.loc[t, 'low']:.3f}-"
                                              f"{patients.loc[t, 'high']:.3f})" if t in patients.index else ""
                                              for t in images["trial_id"]]
        section.add(f"{name}: " + "; ".join(notes) + ".", table, *external_sites(inp, name))
    return section


def patient_level(inp: Inputs, evaluation: pd.DataFrame) -> list:
    """A model's patient-level figures (from its evaluation rows), or the line that says why
    there are none."""
    rows = evaluation[evaluation["variant"] == VARIANT] if len(evaluation) else evaluation
    if len(rows):
        table = rows[rows["metric"].isin(METRICS)][["metric", "value", "low", "high"]].round(4)
        return [f"Patient level: {int(rows['groups'].iloc[0])} patients, one prediction each (the mean of its "
                "images' calibrated probabilities), 95% intervals from resampling patients:", table]
    test = inp.split[inp.split["split"] == "test"] if len(inp.split) else inp.split
    reason = why_not(test["label"].to_numpy(), test["group"].to_numpy()) if len(test) else None
    return [f"No patient-level figures: {reason}."] if reason else []


def refit_section(inp: Inputs) -> Section | None:
    """The chosen trials retrained on folds (evaluate --refit-folds K), when they were."""
    if inp.refit_folds.empty:
        return None
    keep = ["balanced_accuracy", "accuracy", "f1_macro", "roc_auc"]
    # The means and spreads are the leaderboard's refit_* columns (leuktune.leaderboard.refit_summary).
    columns = {f"refit_{m}_{stat}": f"{m} {stat}" for m in keep for stat in ("mean", "std")}
    summary = inp.board.loc[inp.board["refit_folds"].notna(), ["trial_id", *columns]].rename(columns=columns)
    return Section("Retrained on folds").add(
        f"Each chosen trial's configuration retrained on {int(inp.refit_folds['folds'].iloc[0])} group-disjoint "
        "folds, every image held out once:",
        summary.round(4), inp.refit_folds[["trial_id", "fold", "images", *keep]].round(4))
