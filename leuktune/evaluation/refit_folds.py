"""Figures for small sets from a chosen configuration retrained on K group-disjoint folds through
the same trainer (``evaluate --refit-folds K``): an estimate of the chosen, after the search; not
``search.cv``, whose folds choose trials during it (leuktune.training.folds).

A 260-image set leaves 52 test images, where one error moves accuracy by 0.02. Here every image
is held out once: the data is dealt into K folds that never split a group (patient), and for
each fold the configuration trains on the rest (with a validation part carved from it, group-
disjoint too, to pick its kept epoch) and is scored on the fold.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd
from ray import tune
from sklearn.model_selection import StratifiedGroupKFold

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.data.sources import DataError
from leuktune.data.split import SPLITS, deal
from leuktune.metrics import METRICS
from leuktune.results import EpochReport
from leuktune.runfolder import RunFolder
from leuktune.training import trainer
from leuktune.training.trainer import concurrent_trials
from leuktune.trained import load_model



def fold_datasets(data: CachedDataset, split: pd.DataFrame, k: int, cfg: ExperimentConfig) -> list[CachedDataset]:
    """K copies of the data, fold f held out as the test split, the rest dealt into train and val."""
    if split["group"].nunique() < k:
        raise DataError(f"{k} folds need at least {k} groups (patients or images); the data has "
                        f"{split['group'].nunique()}")
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=cfg.data.split.seed)
    fractions = cfg.data.split
    inner = {"train": fractions.train / (fractions.train + fractions.val),
             "val": fractions.val / (fractions.train + fractions.val)}
    datasets = []
    for f, (rest, held) in enumerate(folds.split(np.zeros(len(split)), split["label"], split["group"])):
        codes = np.full(len(split), SPLITS.index("test"), np.int8)
        dealt = deal(split.iloc[rest][["path", "label", "group"]], inner, cfg.data.split.seed + f)
        codes[rest] = dealt.map({s: i for i, s in enumerate(SPLITS)}).to_numpy(np.int8)
        datasets.append(dataclasses.replace(data, splits=codes, fingerprint=f"{data.fingerprint}-refit{k}.{f}"))
    return datasets


def _train_fold(config: dict, experiment: ExperimentConfig, folds: list[CachedDataset], folder: RunFolder) -> None:
    trainer.train(experiment, folds[config["fold"]], folder)


def refit_on_folds(cfg: ExperimentConfig, row: pd.Series, data: CachedDataset, split: pd.DataFrame, k: int,
                   folder: RunFolder, echo: Callable[[str], None] = print, device=None) -> pd.DataFrame:
    """Train the trial's configuration on each of K folds and score it on the held-out fold:
    one row per fold with the test metrics (``refit_folds.parquet``'s rows)."""
    params = {key: row[key] for key in cfg.searched() if key in row and pd.notna(row[key])}
    trial_cfg = cfg.with_params({key: _native(value) for key, value in params.items()})
    # each fold one model (a cross-validated search's trial would train K more inside each)
    trial_cfg = trial_cfg.model_copy(update={"search": trial_cfg.search.model_copy(update={"num_samples": k,
                                                                                           "cv": None})})
    folds = [d.shared() for d in fold_datasets(data, split, k, cfg)]
    trainable = trainer.tune_trainable(_train_fold, trial_cfg, experiment=trial_cfg, folds=folds, folder=folder)
    results = tune.Tuner(
        trainable, param_space={"fold": tune.grid_search(list(range(k)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent_trials(trial_cfg, echo),
                                    reuse_actors=trainer.reuse_actors(trial_cfg)),
        run_config=trainer.tune_run_config(trial_cfg, folder, f"refit-{row['trial_id']}", verbose=0),
    ).fit()
    rows = []
    for result in results:
        if result.error:
            raise result.error
        fold = result.config["fold"]
        last = EpochReport.from_result(result.metrics)  # Tune adds the trial_id to every result
        uri = trainer.find_checkpoint(trial_cfg, folder, result.path, result.metrics["trial_id"], last.kept_epoch)
        scores = load_model(uri, device=device).evaluate("test", data=folds[fold])
        rows.append({"trial_id": row["trial_id"], "fold": fold, "folds": k, "images": scores["test_images"],
                     **{m: scores[f"test_{m}"] for m in METRICS}})
        echo(f"[leuktune] retrained on folds, trial {row['trial_id']}, fold {fold + 1}/{k}: balanced accuracy "
             f"{scores['test_balanced_accuracy']:.4f} on {scores['test_images']} images")
    return pd.DataFrame(rows).sort_values("fold", ignore_index=True)


def _native(value):
    """A leaderboard cell back as the schema's value (integers of a text column such as
    unfreeze_depth come back as text)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value
