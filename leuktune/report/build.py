"""A report a researcher decides from and can put in a paper: the sections, in reading order."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd

from leuktune import runfolder
from leuktune.config import VALUE_TYPES
from leuktune.data.split import SPLITS
from leuktune.evaluation.patients import VARIANT, why_not
from leuktune.leaderboard import arrow_type
from leuktune.metrics import METRICS
from leuktune.report import figures
from leuktune.report.collect import Inputs, collect
from leuktune.report.render import Section, markdown, page
from leuktune.results import FAILED

FACTORS = ("backbone", "head", "activation", "unfreeze_depth")
TOP = 10


def _with_interval(row: pd.Series, metric: str) -> str:
    value = row.get(f"test_{metric}")
    if value is None or pd.isna(value):
        return ""
    return f"{value:.3f} ({row[f'test_{metric}_low']:.3f}-{row[f'test_{metric}_high']:.3f})"


def top_table(inp: Inputs) -> pd.DataFrame:
    board = inp.board.head(TOP)
    table = pd.DataFrame({"trial": board["trial_id"], "status": board["status"]})
    if board["experiment"].nunique() > 1:
        table.insert(0, "experiment", board["experiment"])
    for key in inp.searched:
        table[key] = [("" if v != v else f"{v:.3g}") if isinstance(v, float) else v for v in board[key]]
    table[inp.metric] = board[inp.metric].round(4)
    if f"{inp.metric}_se" in board:
        table["± SE"] = board[f"{inp.metric}_se"].round(4)
        table["tied with top"] = ["yes" if tied is True else "" for tied in board["tied_with_top"]]
    for metric in ("balanced_accuracy", "f1_weighted", "accuracy"):
        table[f"test {metric} (95% CI)"] = [_with_interval(row, metric) for _, row in board.iterrows()]
    if "test_ece" in board:
        table["test ECE -> calibrated"] = [f"{a:.3f} -> {b:.3f}" if pd.notna(a) else ""
                                           for a, b in zip(board["test_ece"], board["test_ece_calibrated"])]
    table["params (M)"] = (board["params"] / 1e6).round(2)
    table["time (s)"] = board["train_seconds"].round(1)
    return table


def study_of(inp: Inputs) -> optuna.Study:
    """An Optuna study rebuilt from the leaderboard, a parameter where it applied only."""
    distributions = {name: dist.optuna(as_text=str(arrow_type(VALUE_TYPES[name])) == "string")
                     for name, dist in inp.config.searched().items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if inp.config.search.mode == "max" else "minimize")
    for _, row in inp.board.iterrows():
        if row["status"] in FAILED or pd.isna(row[inp.metric]):
            continue
        params = {k: row[k] for k in distributions if k in row and pd.notna(row[k])}
        params = {k: int(v) if isinstance(distributions[k], optuna.distributions.IntDistribution) else
                  (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, value=float(row[inp.metric]),
                                                  distributions={k: distributions[k] for k in params}))
    return study


def ties_line(inp: Inputs) -> str | None:
    """One line on how many trials the validation split cannot tell from the top, and what
    that means for the choice; None where the leaderboard has no standard errors."""
    trials = inp.trials
    if "tied_with_top" not in trials or not trials["tied_with_top"].eq(True).any():
        return None
    tied = trials[trials["tied_with_top"].eq(True)]
    se = tied[f"{inp.metric}_se"].iloc[0]
    if len(tied) == 1:
        return (f"Only the top trial is within its own standard error (±{se:.3f}) of the top {inp.metric}: "
                "the validation split tells it apart from the others.")
    return (f"{len(tied)} trials are within one standard error (±{se:.3f}, the top trial's, from resampling the "
            f"validation images) of the top {inp.metric}: the validation split cannot tell them apart, so which of "
            "them ranks first is noise; their ensemble (evaluate.ensemble) is the robust pick.")


def search_section(inp: Inputs, out: Path) -> Section:
    section = Section("The search")
    if (line := ties_line(inp)) is not None:
        section.add(line)
    mode = inp.config.search.mode
    for factor in [f for f in FACTORS if f in inp.trials and inp.trials[f].nunique() > 1]:
        best = (inp.trials.dropna(subset=[inp.metric]).groupby(factor)[inp.metric]
                .agg(["max" if mode == "max" else "min", "count"]).reset_index())
        best.columns = [factor, f"best {inp.metric}", "trials"]
        best = best.sort_values(f"best {inp.metric}", ascending=mode == "min")
        section.add(best.round(4), figures.best_per_value(best, factor, f"best {inp.metric}",
                                                          out / f"best_by_{factor}.png"))
    study = study_of(inp)
    if len(study.trials) >= 2 and inp.config.searched():
        with np.errstate(all="ignore"):
            values = optuna.importance.get_param_importances(study)
        section.add("Hyperparameter importance (Optuna, from the leaderboard; a parameter counts where it "
                    "applied):", pd.DataFrame({"parameter": list(values), "importance": np.round(list(values.values()), 3)}),
                    figures.importance(values, out / "importance.png"))
    else:
        section.add("Hyperparameter importance needs at least two finished trials of a searched parameter.")
    top = inp.trials.dropna(subset=[inp.metric])["trial_id"].head(5).tolist()
    if len(inp.history) and top:
        section.add(f"Learning curves of the best {len(top)} trials:",
                    figures.learning_curves(inp.history, top, inp.metric, out / "learning_curves.png"))
    if inp.trials[inp.metric].notna().any():
        section.add("The search's progress:", figures.progress(inp.trials, inp.metric, mode, out / "progress.png"))
    return section


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
    section.add(f"Trial {best['trial_id']}: test balanced accuracy {_with_interval(best, 'balanced_accuracy')} "
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
                              "test balanced accuracy (95% CI)": _with_interval(row, "balanced_accuracy"),
                              "test F1 macro (95% CI)": _with_interval(row, "f1_macro"),
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
            "internal test balanced accuracy": [_with_interval(internal.loc[t], "balanced_accuracy")
                                                if t in internal.index else "" for t in images["trial_id"]],
            f"{name} balanced accuracy": [f"{v:.3f} ({lo:.3f}-{hi:.3f})"
                                          for v, lo, hi in zip(images["value"], images["low"], images["high"])]})
        if len(patients):  # the set's groups are patients: one prediction each, as in the final evaluation
            notes.append(f"{int(patients['groups'].iloc[0])} patients")
            table[f"{name} patient level"] = [f"{patients.loc[t, 'value']:.3f} ({patients.loc[t, 'low']:.3f}-"
                                              f"{patients.loc[t, 'high']:.3f})" if t in patients.index else ""
                                              for t in images["trial_id"]]
        section.add(f"{name}: " + "; ".join(notes) + ".", table)
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


def cost_section(inp: Inputs) -> Section:
    """What the search used: GPU- and CPU-hours (each trial's time x the share of the node it
    held), trials, and the nodes they ran on (a trial restarted on another node counts both)."""
    board = inp.trials
    section = Section("What the search used")
    if "gpu_seconds" not in board or board["cpu_seconds"].isna().all():
        return section.add("This leaderboard has no cost columns (a search of an earlier leuktune).")
    where = inp.history if "node_id" in inp.history and inp.history["node_id"].notna().any() else board
    nodes = where.dropna(subset=["node_id"]).drop_duplicates(["trial_id", "node_id"])
    started, finished = pd.to_datetime(board["started_at"]).min(), pd.to_datetime(board["finished_at"]).max()
    span = f" over {(finished - started).total_seconds() / 3600:.2f} hours of wall time" if pd.notna(started) else ""
    section.add(f"{len(board)} trials on {nodes['node_id'].nunique()} node(s){span}: "
                f"{board['gpu_seconds'].sum() / 3600:.2f} GPU-hours and {board['cpu_seconds'].sum() / 3600:.2f} "
                "CPU-hours held by trials.")
    per_node = board.assign(gpu_hours=board["gpu_seconds"] / 3600, cpu_hours=board["cpu_seconds"] / 3600)
    per_node = (per_node.groupby(["node_ip", "node_id"], dropna=False)
                .agg(trials=("trial_id", "size"), gpu_hours=("gpu_hours", "sum"), cpu_hours=("cpu_hours", "sum"))
                .reset_index())
    per_node["node_id"] = per_node["node_id"].str[:12]
    return section.add("By the node each trial ended on:", per_node.round(3))


def data_section(inp: Inputs, out: Path) -> Section:
    section = Section("The data")
    if inp.split.empty:
        return section.add("No split.parquet in the run folder.")
    counts = inp.split.groupby(["label", "split"]).size().unstack(fill_value=0)
    counts = counts[[s for s in SPLITS if s in counts]]
    section.add(f"{len(inp.split)} images, {counts.shape[0]} classes, {inp.split['group'].nunique()} groups "
                "(patients, or single images where the data names none); no group is in two splits.",
                counts.reset_index(), figures.class_counts(counts, out / "class_counts.png"))
    section.add(f"{len(inp.rejected)} file(s) rejected as unreadable." if len(inp.rejected) else
                "No file was rejected.")
    if len(inp.rejected):
        section.add(inp.rejected.head(20))
    section.add(f"{len(inp.near_duplicates)} near-duplicate pair(s) across splits." if len(inp.near_duplicates)
                else "No near-duplicate images across splits.")
    if len(inp.near_duplicates):
        section.add(inp.near_duplicates.head(10))
    return section


def cv_section(inp: Inputs) -> Section | None:
    if inp.cv.empty:
        return None
    keep = ["balanced_accuracy", "accuracy", "f1_macro", "roc_auc"]
    # The means and spreads are the leaderboard's cv_* columns (leuktune.leaderboard.cv_summary).
    columns = {f"cv_{m}_{stat}": f"{m} {stat}" for m in keep for stat in ("mean", "std")}
    summary = inp.board.loc[inp.board["cv_folds"].notna(), ["trial_id", *columns]].rename(columns=columns)
    return Section("Cross-validation").add(
        f"{int(inp.cv['folds'].iloc[0])} group-disjoint folds, every image held out once:",
        summary.round(4), inp.cv[["trial_id", "fold", "images", *keep]].round(4))


def write_report(runs: list, out: str | Path | None = None, echo: Callable[[str], None] = print) -> Path:
    """Markdown and self-contained HTML (with the PNGs) for one run or several merged; a search
    still running is reported as far as it has come. Returns the HTML file."""
    inp = collect(runs)
    out = Path(out) if out else (Path(inp.folders[0].path) / runfolder.REPORT if inp.folders[0].local else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    names = ", ".join(sorted(inp.board["experiment"].dropna().unique()))
    statuses = ", ".join(f"{n} {s}" for s, n in inp.trials["status"].value_counts().items())
    overview = Section("Overview").add(
        f"Experiment(s) {names}: {len(inp.trials)} trials ({statuses}), ranked by {inp.metric} "
        f"({inp.config.search.mode}). The test split is read only by the final evaluation.", top_table(inp))
    sections = [overview, search_section(inp, out), test_section(inp, out, echo),
                *filter(None, [ensemble_section(inp, out), external_section(inp), cv_section(inp)]),
                cost_section(inp), data_section(inp, out)]
    title = f"leuktune report: {names}"
    (out / "report.md").write_text(markdown(title, sections, out))
    (out / "report.html").write_text(page(title, sections))
    return out / "report.html"

