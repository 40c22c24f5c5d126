"""The report's section on the search: ties with the top, the best value of each factor,
hyperparameter importance, learning curves and progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from leuktune.config import VALUE_TYPES
from leuktune.leaderboard import arrow_type
from leuktune.report import figures
from leuktune.report.collect import Inputs
from leuktune.report.render import Section
from leuktune.results import FAILED

FACTORS = ("backbone", "head", "activation", "unfreeze_depth")


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
