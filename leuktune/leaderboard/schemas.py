"""The columns of every table of a run, typed: the search's ``trials.parquet`` (a row per trial)
and ``history.parquet`` (a row per trial-epoch), the final evaluation's ``test.parquet`` (a row per
model scored), and the ``leaderboard.parquet`` derived from them with the ensemble's record and the
chosen trials retrained on folds (a row per trial, and one for the ensemble). ``RENAMED``: the
columns an earlier release named otherwise, read under today's names.

Every column has one Arrow type whatever values a search draws: a hyperparameter's type
comes from its field in the schema (``unfreeze_depth``, an integer or "all", is always text).
"""

from __future__ import annotations

import typing
from typing import Any, Iterable

import pyarrow as pa

from leuktune.config import VALUE_TYPES
from leuktune.metrics import METRICS

CONFUSION = pa.list_(pa.list_(pa.int64()))  # rows = true class, columns = predicted
WORST_COLUMNS = [(f"val_{m}_worst", pa.float64()) for m in METRICS]
# Whether the validation split can tell a trial from the top (the search computes them as trials
# end, leuktune.leaderboard.ties): tied or not, judged how (paired_bootstrap of the difference on the
# same validation images, or standard_error: within the top's, for runs that kept no predictions),
# the 95% interval of the trial's search metric minus the top's, and the groups (patients) or images
# that the bootstrap resampled.
TIE_COLUMNS = [("tied_with_top", pa.bool_()), ("tied_by", pa.string()), ("top_difference_low", pa.float64()),
               ("top_difference_high", pa.float64()), ("tie_units", pa.int64())]
ID_COLUMNS = [("experiment", pa.string()), ("trial_id", pa.string()), ("status", pa.string())]
# status: a leuktune.results.TrialStatus (stopped_early: stopped_by asha | patience)
# Each stage of a run writes its own table once; the leaderboard is derived from them (``derive``).
# The final evaluation's (``test.parquet``, a row per model: each evaluated trial and the ensemble):
# the test split once, 95% bootstrap intervals, calibration before and after the temperature fitted
# on the validation split (which predict uses).
TEST_COLUMNS = [
    *((f"test_{m}", pa.float64()) for m in METRICS), ("test_confusion_matrix", CONFUSION),
    *((f"test_{m}_{end}", pa.float64()) for m in METRICS for end in ("low", "high")),
    ("test_images", pa.int64()), ("temperature", pa.float64()), ("test_ece_calibrated", pa.float64()),
]
TEST = pa.schema([("trial_id", pa.string()), *TEST_COLUMNS])
# the ensemble's row only (from ensemble.json): the trials it averages and their weights
ENSEMBLE_COLUMNS = [("members", pa.list_(pa.string())), ("weights", pa.list_(pa.float64()))]
# a chosen trial retrained on K group-disjoint folds (python -m leuktune.evaluate RUN --refit-folds K): from
# refit_folds.parquet's folds, how many, each metric's mean and standard deviation over them
REFIT_COLUMNS = [("refit_folds", pa.int64()),
                 *((f"refit_{m}_{stat}", pa.float64()) for m in METRICS for stat in ("mean", "std"))]
# the search's (``trials.parquet``): a row per trial, as the search recorded it when the trial ended
SEARCH_COLUMNS = [
    ("kept_epoch", pa.int64()), ("epochs_run", pa.int64()), ("stopped_by", pa.string()),
    *((f"val_{m}", pa.float64()) for m in METRICS), ("val_confusion_matrix", CONFUSION),
    # each val metric's bootstrap standard error on the validation split (patients resampled where
    # the data names them), and whether the validation split can tell the trial from the top
    # (leuktune.leaderboard.ties: TIE_COLUMNS)
    *((f"val_{m}_se", pa.float64()) for m in METRICS), *TIE_COLUMNS,
    # a cross-validated trial (search.cv): its folds, and the standard deviation of each val metric over them
    ("val_folds", pa.int64()), *((f"val_{m}_fold_std", pa.float64()) for m in METRICS),
    # a trial validated on held-out labs (search.cv: sites): each val metric at its worst site (the
    # mean over sites is val_*; each site's figures are sites.parquet's)
    *WORST_COLUMNS,
    ("params", pa.int64()), ("trainable_params", pa.int64()), ("inference_ms", pa.float64()),
    ("pareto_front", pa.bool_()),  # multi-objective searches: not dominated on every objective
    ("unfreeze_depth_effective", pa.int64()), ("stage_groups", pa.int64()), ("backbone_activation", pa.string()),
    # the pretrained weights the backbone loaded: a file's name and the start of its sha256, a Hub id,
    # or "none (random init)"
    ("backbone_weights", pa.string()),
    ("workers", pa.int64()), ("precision", pa.string()), ("train_seconds", pa.float64()), ("device", pa.string()),
    # where it ran (its last epoch: a trial restarted after a lost node names the new one), and what
    # it cost: train_seconds x the CPUs and GPUs the trial held
    ("node_ip", pa.string()), ("node_id", pa.string()), ("cpu_seconds", pa.float64()), ("gpu_seconds", pa.float64()),
    # a frozen backbone's cached features: computed or loaded, views per image, views this trial computed
    ("frozen_features", pa.string()), ("feature_views", pa.int64()), ("feature_views_computed", pa.int64()),
    # the trial's kept checkpoint, relative to the run folder (tune/<trial>/checkpoint_000007); load()
    # adds checkpoint_uri beside it: a path or URI of where the run is read from
    ("checkpoint", pa.string()), ("started_at", pa.string()), ("finished_at", pa.string()),
    ("leuktune_version", pa.string()), ("data_fingerprint", pa.string()),
    ("error", pa.string()), ("error_file", pa.string()),  # the exception's type and message; Ray's full record
]
_SEARCH = dict(SEARCH_COLUMNS)
# The leaderboard's columns after the hyperparameters, in the order an earlier release wrote them.
RESULT_COLUMNS = [
    *((name, _SEARCH[name]) for name in ("kept_epoch", "epochs_run", "stopped_by")),
    *((f"val_{m}", pa.float64()) for m in METRICS), ("val_confusion_matrix", CONFUSION),
    *((f"val_{m}_se", pa.float64()) for m in METRICS), *TIE_COLUMNS,
    ("val_folds", pa.int64()), *((f"val_{m}_fold_std", pa.float64()) for m in METRICS), *WORST_COLUMNS,
    *TEST_COLUMNS, *ENSEMBLE_COLUMNS, *REFIT_COLUMNS,
    *SEARCH_COLUMNS[SEARCH_COLUMNS.index(("params", pa.int64())):],
]
# The ensemble's id wherever models are named (its leaderboard row's trial_id and status, test.parquet,
# the evaluation's tables; trial="ensemble" of load_model, predict and export): it is not a trial.
ENSEMBLE_ID = "ensemble"
HISTORY_COLUMNS = [
    ("experiment", pa.string()), ("trial_id", pa.string()), ("epoch", pa.int64()),
    ("train_loss", pa.float64()), ("train_images_per_s", pa.float64()), ("epoch_seconds", pa.float64()),
    ("lr", pa.float64()), ("resumed_from_epoch", pa.int64()), ("newly_kept_epoch", pa.int64()),
    ("inference_ms", pa.float64()), *((f"val_{m}", pa.float64()) for m in METRICS),
    *((f"val_{m}_se", pa.float64()) for m in METRICS), ("val_folds", pa.int64()),
    *((f"val_{m}_fold_std", pa.float64()) for m in METRICS), *WORST_COLUMNS,
    ("val_confusion_matrix", CONFUSION), ("node_ip", pa.string()), ("node_id", pa.string()),
    # which validation of the trial the row is (train.validate_every: only validated epochs are rows),
    # and why a checkpoint due that epoch could not be written
    ("validation", pa.int64()), ("checkpoint_error", pa.string()),
    # null on a trial's own rows; a search.cv: sites trial also has a row per held-out site and
    # epoch, with that site's val_* and val_*_se (leuktune.leaderboard.held_out)
    ("site", pa.string()),
]
HISTORY = pa.schema(HISTORY_COLUMNS)
# search.cv: sites (sites.parquet): a row per trial and held-out site, the site's figures at the
# trial's kept epoch: each val metric with its bootstrap standard error on that site's images
SITES = pa.schema([
    ("experiment", pa.string()), ("trial_id", pa.string()), ("site", pa.string()), ("kept_epoch", pa.int64()),
    ("val_images", pa.int64()), *((f"val_{m}", pa.float64()) for m in METRICS),
    *((f"val_{m}_se", pa.float64()) for m in METRICS),
])

# Earlier releases' names of columns -> today's, for every table read (leaderboard.renamed) and every
# table added to (leaderboard.conformed): a run folder of an earlier release opens, and resumes, as it is.
RENAMED = {
    "checkpoint_uri": "checkpoint",  # it held a path relative to the run, not a URI
    # the epoch a trial keeps (train.keep: under keep: last, the last, not the best)
    "best_epoch": "kept_epoch", "best_value": "kept_value", "improved_epoch": "newly_kept_epoch",
    # a chosen trial retrained on folds (evaluate --cv), not the folds of search.cv that choose it
    "cv_folds": "refit_folds",
    **{f"cv_{m}_{stat}": f"refit_{m}_{stat}" for m in METRICS for stat in ("mean", "std")},
}


def arrow_type(value_type: Any) -> pa.DataType:
    """One Arrow type for a hyperparameter's values: numbers as numbers, anything else as text."""
    while typing.get_origin(value_type) is typing.Annotated:
        value_type = typing.get_args(value_type)[0]
    if value_type is bool:
        return pa.bool_()
    if value_type is int:
        return pa.int64()
    if value_type is float:
        return pa.float64()
    return pa.string()  # str, a Literal of names, or a mix such as int | "all"


def schema(hyperparameters: Iterable[str]) -> pa.Schema:
    """The leaderboard's columns for a search of these hyperparameters, in order."""
    return pa.schema([*ID_COLUMNS, *((h, arrow_type(VALUE_TYPES[h])) for h in hyperparameters), *RESULT_COLUMNS])


def trials_schema(hyperparameters: Iterable[str]) -> pa.Schema:
    """The search's table (``trials.parquet``): the leaderboard's columns that the search writes."""
    return pa.schema([*ID_COLUMNS, *((h, arrow_type(VALUE_TYPES[h])) for h in hyperparameters), *SEARCH_COLUMNS])


def searched_hyperparameters(columns: Iterable[str]) -> list[str]:
    """The searched hyperparameters among a table's columns: those that are neither ids nor results."""
    fixed = {name for name, _ in (*ID_COLUMNS, *RESULT_COLUMNS)}
    return [c for c in columns if c not in fixed]
