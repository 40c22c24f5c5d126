"""Does the searcher earn its keep? The default (TPE told what ASHA saw, with ASHA stopping
weak trials) against random search without early stopping: the same number of trials on the
built-in set, for several sampler seeds. Best validation balanced accuracy and the trial-seconds
each spent."""

from __future__ import annotations

import statistics
import time

import pandas as pd

from leuktune.results import TrialStatus
from leuktune.runtime import ray_session
from leuktune.search.driver import search

STRATEGIES = {
    "tpe+asha": ["search.searcher.optuna.sampler=tpe"],
    "random, no early stopping": ["search.searcher.optuna.sampler=random", "search.scheduler.asha=null"],
}


def bench_searchers(trials: int, seeds: list[int], workdir: str, overrides: list[str]) -> pd.DataFrame:
    rows = []
    with ray_session(logging_level="ERROR"):
        for seed in seeds:
            for strategy, settings in STRATEGIES.items():
                name = f"searchers-{strategy.split(',')[0].replace('+', '-')}-seed{seed}-{time.strftime('%H%M%S')}"
                board = search(overrides=[f"storage.path={workdir}", f"name={name}", f"search.num_samples={trials}",
                                          f"search.searcher.optuna.seed={seed}", *settings, *overrides],
                               echo=lambda message: None)
                rows.append({"strategy": strategy, "seed": seed,
                             "best_val_balanced_accuracy": round(float(board["val_balanced_accuracy"].max()), 4),
                             "trial_seconds": round(float(board["train_seconds"].sum()), 1),
                             "epochs_run": int(board["epochs_run"].sum()),
                             "stopped_early": int((board["status"] == TrialStatus.STOPPED_EARLY).sum())})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby("strategy").agg(
        best_mean=("best_val_balanced_accuracy", statistics.fmean),
        trial_seconds_mean=("trial_seconds", statistics.fmean), epochs_mean=("epochs_run", statistics.fmean))
    print("\n" + table.to_string(index=False) + "\n\n" + summary.round(4).to_string())
    return table
