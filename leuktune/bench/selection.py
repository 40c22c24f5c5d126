"""Does the search's pick beat one good default? On the harder built-in set with a small
validation split and on real image sets the user gives (a class folder, or a CSV/Parquet manifest
whose ``group`` column names patients or source pictures), over several seeds: the test balanced
accuracy and the trial-seconds of one default-recipe trial's last epoch and of each way a search
chooses its model (``SELECTION_VARIANTS``).

Each seed draws another split, other initial weights and another sampler sequence; the variants
of one seed share them, so they differ only in how the model is chosen."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from leuktune.bench.strategies import SELECTION_BUILTIN, SELECTION_VARIANTS
from leuktune.leaderboard import load, trial_rows
from leuktune.runtime import ray_session
from leuktune.tuning.driver import search

BUILTIN = "builtin"


def located(dataset: str, expected: str = "a class folder or a CSV/Parquet manifest") -> tuple[str, Path]:
    """(data.source, absolute path) of a class folder or a CSV/Parquet manifest; FileNotFoundError
    names it and says what was ``expected``."""
    path = Path(dataset).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{dataset}: no such set (expected {expected} with columns path, label[, group])")
    return ("csv" if path.suffix in (".csv", ".parquet") else "imagefolder"), path


def data_settings(dataset: str) -> list[str]:
    """The overrides that point a search at ``dataset``: ``builtin``, a class folder or a manifest."""
    if dataset == BUILTIN:
        return SELECTION_BUILTIN
    source, path = located(dataset, f"{BUILTIN!r}, a class folder or a CSV/Parquet manifest")
    return [f"data.source={source}", f"data.root={path}"]


def pick(run: Path) -> dict:
    """The search's choice (its leaderboard's top trial) on the test split, and what the search cost."""
    board = load(run)
    trials = trial_rows(board)
    top = trials.iloc[0]
    tied = int(trials["tied_with_top"].eq(True).sum()) if "tied_with_top" in trials else 0
    return {"test balanced accuracy": top["test_balanced_accuracy"], "val": top["val_balanced_accuracy"],
            "kept epoch": int(top["kept_epoch"]), "tied with top": tied, "trials": len(trials),
            "trial-seconds": float(trials["train_seconds"].sum())}


def bench_selection(datasets: list[str], variants: list[str], trials: int, seeds: list[int], workdir: str,
                    overrides: list[str]) -> pd.DataFrame:
    work = Path(workdir).resolve()
    rows = []
    with ray_session(logging_level="ERROR"):
        for dataset in datasets:
            label = Path(dataset).stem if dataset != BUILTIN else BUILTIN
            for seed in seeds:
                for variant in variants:
                    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"selection-{label}-s{seed}-{variant}-"
                                                                 f"{time.strftime('%H%M%S')}")
                    started = time.time()
                    search(overrides=[f"storage.path={work}", f"name={name}", *data_settings(dataset),
                                      f"search.num_samples={trials}", f"data.split.seed={seed}", f"train.seed={seed}",
                                      f"search.searcher.optuna.seed={seed}", "evaluate.top_k=1",
                                      "evaluate.ensemble=0", "evaluate.bootstrap=200", *overrides,
                                      *SELECTION_VARIANTS[variant]], echo=lambda message: None)
                    rows.append({"set": label, "seed": seed, "variant": variant, **pick(work / name),
                                 "wall seconds": round(time.time() - started)})
                    print(rows[-1], flush=True)
                    pd.DataFrame(rows).to_csv(work / "selection.csv", index=False)  # kept as it goes
    per_run = pd.DataFrame(rows)
    summary = (per_run.groupby(["set", "variant"], sort=False)
               .agg(test=("test balanced accuracy", "mean"), test_sd=("test balanced accuracy", "std"),
                    trial_seconds=("trial-seconds", "mean"), kept_epoch=("kept epoch", "mean"),
                    tied=("tied with top", "mean"), seeds=("seed", "count")).round(4).reset_index())
    print(f"\ntest balanced accuracy of each way of choosing, mean (sd) over seeds {seeds}\n")
    print(summary.to_string(index=False))
    return per_run
