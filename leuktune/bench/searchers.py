"""Does the search earn its keep? Two benchmarks on the harder built-in set
(``data.synthetic.difficulty`` 1 unless ``--set`` says otherwise):

- ``signal``: trials run to the end (random draws, no early stopping) under each training
  variant (e.g. EMA weights, a longer warm-up); for each, how well the score at each rung
  foretells the trial's final score (Kendall tau, per ASHA score: last, best, smoothed).
- ``searchers``: random, TPE with Optuna's 10 start-up trials, TPE with leuktune's start-up
  (``startup_trials: auto``) and GP, each with and without ASHA, several seeds: the best
  validation score found against cumulative trial-seconds, and the tau of the runs without
  early stopping.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pandas as pd

from leuktune import runfolder
from leuktune.bench.rungs import best_by_seconds, best_within, rung_tau
from leuktune.bench.strategies import HARDER, NO_EARLY_STOPPING, SAMPLERS, STRATEGIES
from leuktune.config import load
from leuktune.results import TrialStatus
from leuktune.runtime import ray_session
from leuktune.tuning.driver import search
from leuktune.tuning.scheduler import SCORES

def _run(workdir: str, name: str, settings: list[str]) -> Path:
    """One search, quiet; its run folder."""
    search(overrides=[f"storage.path={workdir}", f"name={name}", "evaluate.top_k=0", *settings],
           echo=lambda message: None)
    return Path(workdir) / name


def _taus(folder: Path, cfg) -> dict[str, float]:
    """Kendall tau of every score at every rung up to half the validations, for one run."""
    history = pd.read_parquet(folder / runfolder.HISTORY)
    metric, mode = cfg.search.metric, cfg.search.mode
    return {f"tau_{score}@{rung}": round(rung_tau(history, metric, mode, rung, score), 3)
            for rung in range(1, max(1, cfg.train.validations // 2) + 1) for score in SCORES}


def bench_signal(variants: dict[str, list[str]], trials: int, seeds: list[int], workdir: str,
                 overrides: list[str]) -> pd.DataFrame:
    rows = []
    with ray_session(logging_level="ERROR"):
        for seed in seeds:
            for variant, settings in variants.items():
                started = time.time()
                name = f"signal-{variant}-seed{seed}-{time.strftime('%H%M%S')}"
                run = [*HARDER, *SAMPLERS["random"], *NO_EARLY_STOPPING, f"search.num_samples={trials}",
                       f"search.searcher.optuna.seed={seed}", *overrides, *settings]
                folder = _run(workdir, name, run)
                board, cfg = pd.read_parquet(folder / runfolder.LEADERBOARD), load(folder / runfolder.CONFIG)
                rows.append({"variant": variant, "seed": seed, **_taus(folder, cfg),
                             "best_val": round(float(board[cfg.search.metric].max()), 4),
                             "trial_seconds": round(float(board["train_seconds"].sum()), 1),
                             "wall_s": round(time.time() - started)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = table.drop(columns=["seed"]).groupby("variant", sort=False).mean().round(3)
    print("\n" + summary.T.to_string())
    return table


def bench_searchers(strategies: list[str], trials: int, seeds: list[int], workdir: str,
                    overrides: list[str]) -> pd.DataFrame:
    rows, curves = [], {}
    with ray_session(logging_level="ERROR"):
        for seed in seeds:
            for strategy in strategies:
                name = f"searchers-{strategy.replace('+', '-')}-seed{seed}-{time.strftime('%H%M%S')}"
                run = [*HARDER, f"search.num_samples={trials}", f"search.searcher.optuna.seed={seed}",
                       *STRATEGIES[strategy], *overrides]
                folder = _run(workdir, name, run)
                board = pd.read_parquet(folder / runfolder.LEADERBOARD)
                cfg = load(folder / runfolder.CONFIG)
                curves[strategy, seed] = best_by_seconds(board, cfg.search.metric, cfg.search.mode)
                rows.append({"strategy": strategy, "seed": seed,
                             "best_val": round(float(curves[strategy, seed]["best"].iloc[-1]), 4),
                             "trial_seconds": round(float(board["train_seconds"].sum()), 1),
                             "epochs_run": int(board["epochs_run"].sum()),
                             "stopped_early": int((board["status"] == TrialStatus.STOPPED_EARLY).sum()),
                             **(_taus(folder, cfg) if "+asha" not in strategy else {})})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False))
    print("\n" + _anytime(curves, strategies, seeds).to_string())
    return table


def _anytime(curves: dict, strategies: list[str], seeds: list[int]) -> pd.DataFrame:
    """Mean over seeds of the best found within a share of the budget random search without
    early stopping spent (its trial-seconds, per seed): who finds what, for what."""
    reference = "random" if "random" in strategies else strategies[0]
    shares = (0.25, 0.5, 1.0)
    summary = {}
    for strategy in strategies:
        summary[strategy] = {
            f"best within {share:.0%} of {reference}'s seconds": statistics.fmean(
                best_within(curves[strategy, seed], share * curves[reference, seed]["trial_seconds"].iloc[-1])
                for seed in seeds)
            for share in shares}
        summary[strategy]["best (all its trials)"] = statistics.fmean(curves[strategy, s]["best"].iloc[-1]
                                                                     for s in seeds)
        summary[strategy]["trial-seconds"] = statistics.fmean(curves[strategy, s]["trial_seconds"].iloc[-1]
                                                              for s in seeds)
    return pd.DataFrame(summary).T.round(4)
