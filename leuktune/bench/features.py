"""What caching a frozen backbone's features saves: one search of head trials (linear, mlp,
logistic, knn, with their searched options) over one frozen backbone, on the built-in set, with
``model.feature_cache`` auto and off. The random sampler with one seed draws the same trials in
both, and no scheduler stops any, so both runs do the same work but for the backbone passes.

Figures per run: wall seconds, trial-seconds (the trials' own time, summed), backbone passes
(images the backbone processed / the training and validation images) and the top trial's
validation and test balanced accuracy, with the validation score's standard error."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from leuktune.leaderboard import load, trial_rows
from leuktune.runtime import ray_session
from leuktune.tuning.driver import search

HEADS = ["search.searcher.optuna.sampler=random", "search.scheduler.asha=null", "model.pretrained=false",
         "model.unfreeze_depth=0", "model.head={choice: [linear, mlp, logistic, knn]}",
         "model.mlp_hidden={choice: [128, 512]}", "model.dropout={uniform: [0.0, 0.5]}",
         "model.probe_l2={loguniform: [1.0e-5, 1.0e-1]}", "model.knn_k={choice: [5, 10, 20, 50]}",
         "train.lr={loguniform: [1.0e-4, 1.0e-2]}", "evaluate.top_k=1", "evaluate.ensemble=0"]


def backbone_passes(board: pd.DataFrame) -> float:
    """Images through the backbone / the training and validation images: each computation of
    features is one pass per view; a trial without them passes over the training images each
    epoch and the validation images each validation (every epoch here)."""
    return float(board["feature_views_computed"].sum() + board.loc[board["frozen_features"].isna(), "epochs_run"].sum())


def bench_features(backbones: list[str], trials: int, epochs: int, seed: int, workdir: str,
                   overrides: list[str], caches: tuple[str, ...] = ("auto", "off")) -> pd.DataFrame:
    work = Path(workdir).resolve()
    rows = []
    with ray_session(logging_level="ERROR"):
        for spec in backbones:
            backbone, _, size = spec.partition("@")
            for mode in caches:
                name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"features-{backbone}-{size}-{mode}-{time.strftime('%H%M%S')}")
                started = time.time()
                search(overrides=[f"storage.path={work}", f"name={name}", f"data.cache_dir={work / 'cache'}",
                                  f"model.backbone={backbone}", f"data.image_size={size or 128}",
                                  f"search.num_samples={trials}", f"train.epochs={epochs}",
                                  f"search.searcher.optuna.seed={seed}", f"train.seed={seed}", *HEADS, *overrides,
                                  f"model.feature_cache={mode}"], echo=lambda message: None)
                wall = time.time() - started
                board = load(work / name)
                board = trial_rows(board)
                top = board.iloc[0]
                rows.append({"backbone": spec, "feature_cache": mode, "trials": len(board),
                             "failed": int(board["status"].isin(["error", "diverged"]).sum()),
                             "wall_s": round(wall), "trial_s": round(float(board["train_seconds"].sum())),
                             "backbone_passes": backbone_passes(board),
                             "best_val": round(float(top["val_balanced_accuracy"]), 4),
                             "best_val_se": round(float(top["val_balanced_accuracy_se"]), 4),
                             "best_head": top["head"], "best_test": round(float(top["test_balanced_accuracy"]), 4)})
                print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(work / "features.csv", index=False)  # kept as it goes
    table = pd.DataFrame(rows)
    print("\nhead trials over one frozen backbone, features cached (auto) or not (off)\n")
    print(table.to_string(index=False))
    for spec in backbones:
        runs = table[table["backbone"] == spec].set_index("feature_cache")
        if {"auto", "off"} <= set(runs.index):
            print(f"{spec}: {runs.loc['off', 'trial_s'] / max(runs.loc['auto', 'trial_s'], 1):.1f}x fewer "
                  f"trial-seconds, {runs.loc['off', 'wall_s'] / max(runs.loc['auto', 'wall_s'], 1):.1f}x less wall "
                  f"time with the cache")
    return table
