"""How well a trial's early epochs foretell its end, and how fast a search finds its best.

Both read a finished search's files: ``history.parquet`` (every validated epoch of every trial)
and ``leaderboard.parquet`` (one row per trial, with its seconds and when it finished).

>>> import pandas as pd
>>> history = pd.DataFrame({"trial_id": list("aaabbbccc"), "validation": [1, 2, 3] * 3,
...                         "val_balanced_accuracy": [.2, .5, .6, .4, .4, .5, .1, .7, .9]})
>>> rung_tau(history, "val_balanced_accuracy", "max", rung=1, score="last")  # epoch 1 ranks them backwards
-1.0
>>> rung_tau(history, "val_balanced_accuracy", "max", rung=2, score="last")
1.0
"""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import kendalltau

from leuktune.tuning.scheduler import SCORES


def _series(history: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    """Each trial's validated values in order; only trials that ran to the end (as many
    validations as the longest)."""
    ordered = history.dropna(subset=[metric]).sort_values(["trial_id", "validation"])
    series = {trial: list(rows[metric]) for trial, rows in ordered.groupby("trial_id")}
    longest = max((len(v) for v in series.values()), default=0)
    return {trial: values for trial, values in series.items() if len(values) == longest}


def rung_tau(history: pd.DataFrame, metric: str, mode: str, rung: int, score: str) -> float:
    """Kendall's tau between the trials' ``score`` at validation ``rung`` and their final
    score (the best epoch's, which the search ranks by), over the trials that ran to the end:
    1 when the rung ranks trials as they end, 0 when it says nothing. NaN for fewer than 3 trials."""
    series = _series(history, metric)
    if len(series) < 3:
        return math.nan
    at_rung = [SCORES[score](values[:rung], mode) for values in series.values()]
    final = [SCORES["best"](values, mode) for values in series.values()]
    return float(kendalltau(at_rung, final).statistic)


def best_by_seconds(board: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The best ``metric`` found so far against the trial-seconds spent so far, trial by
    trial in the order they finished (a search's anytime performance)."""
    done = board.dropna(subset=["finished_at"]).sort_values("finished_at")
    best = done[metric].cummax() if mode == "max" else done[metric].cummin()
    return pd.DataFrame({"trial_seconds": done["train_seconds"].cumsum().to_numpy(), "best": best.to_numpy()})


def best_within(curve: pd.DataFrame, seconds: float) -> float:
    """The best found within ``seconds`` of trial time (NaN if no trial had finished by then)."""
    within = curve[curve["trial_seconds"] <= seconds + 1e-9]
    return float(within["best"].iloc[-1]) if len(within) else math.nan
