"""The report's section on the search: ties with the top, the best value of each factor,
hyperparameter importance, learning curves and progress."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from leuktune.config import VALUE_TYPES
from leuktune.leaderboard import arrow_type
from leuktune.leaderboard.ties import BAND, CONFIDENCE, PAIRED
from leuktune.report import figures
from leuktune.report.collect import Inputs
from leuktune.report.render import Section
from leuktune.results import FAILED

FACTORS = ("backbone", "head", "activation", "unfreeze_depth")
# Below this many finished trials per parameter, fANOVA's forest has too few points per dimension to
# split the scores' variance by anything but chance (its shares come out near equal, or arbitrary).
TRIALS_PER_PARAMETER = 5


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


def _judged_how(top: pd.Series, metric: str) -> str:
    """What the paired test compared, from the top trial's row: its images (and folds) and what was resampled."""
    matrix = top.get("val_confusion_matrix")
    images = int(np.sum([np.sum(row) for row in matrix])) if matrix is not None and len(matrix) else None
    units = int(top["tie_units"]) if pd.notna(top.get("tie_units")) else None
    folds = f" of its {int(top['val_folds'])} folds" if pd.notna(top.get("val_folds")) else ""
    on = f"the same {images} validation images{folds}" if images else f"the same validation images{folds}"
    resampled = ("resampling images" if units is None or units == images
                 else f"resampling {units} groups of images (patients where the data names them)")
    return f"paired bootstrap of the difference in {metric} on {on}, {resampled}"


def ties_line(inp: Inputs) -> str | None:
    """One line on which trials are tied with the top and what that was tested by; None where the
    leaderboard has no tie columns."""
    trials = inp.trials
    if "tied_with_top" not in trials or not trials["tied_with_top"].eq(True).any():
        return None
    tied = trials[trials["tied_with_top"].eq(True)]
    top = trials.iloc[0]
    how = trials["tied_by"] if "tied_by" in trials else pd.Series(BAND, index=trials.index)
    if top.get("tied_by") == PAIRED:
        interval = f"the {round(CONFIDENCE * 100)}% interval of each one's difference from the top"
        line = (f"{len(tied)} trials (the top included) are tied with the top: {interval} holds 0"
                if len(tied) > 1 else f"No other trial is tied with the top: {interval} excludes 0")
        line += f" ({_judged_how(top, inp.metric)})."
        band = int(how.eq(BAND).sum())
        if band:
            line += (f" {band} trial(s) whose checkpoints keep no validation predictions were judged by the top "
                     "trial's standard error instead.")
        return line
    se = top[f"{inp.metric}_se"]
    return (f"{len(tied)} trial(s) (the top included) are within the top trial's standard error (±{se:.3f}) of the "
            f"top {inp.metric}: a band, not a test of the difference, as this run's checkpoints keep no validation "
            "predictions.")


def importance(inp: Inputs, out: Path) -> list:
    """Optuna's hyperparameter importance (fANOVA: a random forest fitted to the trials' scores,
    its variance split among the parameters), or one line saying why it is not shown. A forest
    fitted to fewer than ``TRIALS_PER_PARAMETER`` trials per parameter, or to scores that do not
    vary, splits noise, and the shares it prints (0.333 each of three from six trials) read as a
    finding; so does one Optuna warns about."""
    study = study_of(inp)
    finished = study.trials
    # what fANOVA weighs: the parameters every finished trial drew (a conditional one is left out)
    common = set.intersection(*(set(t.params) for t in finished)) if finished else set()
    needed = TRIALS_PER_PARAMETER * len(common)
    if not common or len(finished) < needed:
        return [f"Hyperparameter importance not shown: {len(finished)} finished trial(s) for {len(common)} "
                f"parameter(s) that every trial drew; it needs at least {TRIALS_PER_PARAMETER} trials per "
                f"parameter ({max(needed, TRIALS_PER_PARAMETER)} here) to tell an effect from noise."]
    if len({t.value for t in finished}) == 1:
        return [f"Hyperparameter importance not shown: all {len(finished)} finished trials scored the same "
                f"{inp.metric}, so there is no variance to split among the parameters."]
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        values = optuna.importance.get_param_importances(study)
    if caught:
        return [f"Hyperparameter importance not shown: Optuna warned while computing it "
                f"({str(caught[0].message).splitlines()[0]})."]
    return [f"Hyperparameter importance (Optuna's fANOVA, from {len(finished)} finished trials; the parameters "
            "every trial drew):",
            pd.DataFrame({"parameter": list(values), "importance": np.round(list(values.values()), 3)}),
            figures.importance(values, out / "importance.png")]


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
    section.add(*importance(inp, out))
    top = inp.trials.dropna(subset=[inp.metric])["trial_id"].head(5).tolist()
    if len(inp.history) and top:
        section.add(f"Learning curves of the best {len(top)} trials:",
                    figures.learning_curves(inp.history, top, inp.metric, out / "learning_curves.png"))
    if inp.trials[inp.metric].notna().any():
        section.add("The search's progress:", figures.progress(inp.trials, inp.metric, mode, out / "progress.png"))
    return section
