"""The leaderboard's two tables, typed: ``leaderboard.parquet`` (a row per trial) and
``history.parquet`` (a row per trial-epoch), readable by pandas, pyarrow, DuckDB, Polars.

Every column has one Arrow type whatever values a search draws: a hyperparameter's type
comes from its field in the schema (``unfreeze_depth``, an integer or "all", is always text).
Rows are appended as trials finish, by writing the whole table aside and renaming it over
the old one (one request in a bucket), so a search killed at any moment leaves a complete,
readable file holding every trial that had finished.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leuktune import metrics, runfolder, uris
from leuktune.config import VALUE_TYPES
from leuktune.config.search import DEFAULT_METRIC
from leuktune.errors import LeuktuneError
from leuktune.metrics import METRICS
from leuktune.results import FAILED, TrialStatus
from leuktune.runfolder import RunFolder

CONFUSION = pa.list_(pa.list_(pa.int64()))  # rows = true class, columns = predicted
ID_COLUMNS = [("experiment", pa.string()), ("trial_id", pa.string()), ("status", pa.string())]
# status: a leuktune.results.TrialStatus (stopped_early: stopped_by asha | patience)
RESULT_COLUMNS = [
    ("best_epoch", pa.int64()), ("epochs_run", pa.int64()), ("stopped_by", pa.string()),
    *((f"val_{m}", pa.float64()) for m in METRICS), ("val_confusion_matrix", CONFUSION),
    # each val metric's bootstrap standard error on the validation split (patients resampled where
    # the data names them), and whether the trial's search metric is within the top trial's
    # standard error of the top: the validation split cannot tell it from the top
    *((f"val_{m}_se", pa.float64()) for m in METRICS), ("tied_with_top", pa.bool_()),
    # a cross-validated trial (search.cv): its folds, and the standard deviation of each val metric over them
    ("val_folds", pa.int64()), *((f"val_{m}_fold_std", pa.float64()) for m in METRICS),
    # the final evaluation (top trials only): the test split once, 95% bootstrap intervals,
    # calibration before and after the temperature fitted on the validation split
    *((f"test_{m}", pa.float64()) for m in METRICS), ("test_confusion_matrix", CONFUSION),
    *((f"test_{m}_{end}", pa.float64()) for m in METRICS for end in ("low", "high")),
    ("test_images", pa.int64()), ("temperature", pa.float64()), ("test_ece_calibrated", pa.float64()),
    # the ensemble's row only: the trials it averages and their weights (leuktune.evaluate.ensemble)
    ("members", pa.list_(pa.string())), ("weights", pa.list_(pa.float64())),
    # cross-validation (python -m leuktune.evaluate RUN --cv K): mean and standard deviation over folds
    ("cv_folds", pa.int64()), *((f"cv_{m}_{stat}", pa.float64()) for m in METRICS for stat in ("mean", "std")),
    ("params", pa.int64()), ("trainable_params", pa.int64()), ("inference_ms", pa.float64()),
    ("pareto_front", pa.bool_()),  # multi-objective searches: not dominated on every objective
    ("unfreeze_depth_effective", pa.int64()), ("stage_groups", pa.int64()), ("backbone_activation", pa.string()),
    ("workers", pa.int64()), ("precision", pa.string()), ("train_seconds", pa.float64()), ("device", pa.string()),
    # where it ran (its last epoch: a trial restarted after a lost node names the new one), and what
    # it cost: train_seconds x the CPUs and GPUs the trial held
    ("node_ip", pa.string()), ("node_id", pa.string()), ("cpu_seconds", pa.float64()), ("gpu_seconds", pa.float64()),
    # a frozen backbone's cached features: computed or loaded, views per image, views this trial computed
    ("frozen_features", pa.string()), ("feature_views", pa.int64()), ("feature_views_computed", pa.int64()),
    ("checkpoint_uri", pa.string()), ("started_at", pa.string()), ("finished_at", pa.string()),
    ("leuktune_version", pa.string()), ("data_fingerprint", pa.string()),
    ("error", pa.string()), ("error_file", pa.string()),  # the exception's type and message; Ray's full record
]
HISTORY_COLUMNS = [
    ("experiment", pa.string()), ("trial_id", pa.string()), ("epoch", pa.int64()),
    ("train_loss", pa.float64()), ("train_images_per_s", pa.float64()), ("epoch_seconds", pa.float64()),
    ("lr", pa.float64()), ("resumed_from_epoch", pa.int64()), ("improved_epoch", pa.int64()),
    ("inference_ms", pa.float64()), *((f"val_{m}", pa.float64()) for m in METRICS),
    *((f"val_{m}_se", pa.float64()) for m in METRICS), ("val_folds", pa.int64()),
    *((f"val_{m}_fold_std", pa.float64()) for m in METRICS),
    ("val_confusion_matrix", CONFUSION), ("node_ip", pa.string()), ("node_id", pa.string()),
    # which validation of the trial the row is (train.validate_every: only validated epochs are rows),
    # and why a checkpoint due that epoch could not be written
    ("validation", pa.int64()), ("checkpoint_error", pa.string()),
]
HISTORY = pa.schema(HISTORY_COLUMNS)


class LeaderboardError(LeuktuneError, ValueError):
    """A leaderboard that cannot be found or read, naming the path."""


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


def _cast(value: Any, kind: pa.DataType) -> Any:
    if value is None or (isinstance(value, float) and value != value and not pa.types.is_floating(kind)):
        return None
    if pa.types.is_string(kind):
        return str(value)
    if kind == CONFUSION:
        return [[int(v) for v in row] for row in value]
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    return value


def table(rows: Iterable[dict[str, Any]], columns: pa.Schema) -> pa.Table:
    """Rows as a table of exactly these columns and types (missing values null)."""
    rows = list(rows)
    return pa.table({f.name: pa.array([_cast(r.get(f.name), f.type) for r in rows], type=f.type)
                     for f in columns}, schema=columns)


def conformed(old: pa.Table, columns: pa.Schema) -> pa.Table:
    """A table written by an earlier leuktune in today's columns: one this version added (e.g.
    ``val_ece``) is null in its rows, so a run started before an upgrade resumes after it (a
    column this version no longer writes is left out)."""
    return pa.table({f.name: old[f.name].cast(f.type) if f.name in old.column_names
                     else pa.nulls(old.num_rows, f.type) for f in columns}, schema=columns)


def append(folder: RunFolder, name: str, rows: Iterable[dict[str, Any]], columns: pa.Schema,
           replacing: Iterable[str] = ()) -> None:
    """Add rows to one of the run's tables, atomically; the table's rows of the trials in
    ``replacing`` (trial ids) go first."""
    new = table(rows, columns)
    replacing = pa.array(list(replacing), pa.string())
    if new.num_rows == 0 and len(replacing) == 0:
        return
    if folder.exists(name):
        old = conformed(folder.read_table(name), columns)
        if len(replacing):
            old = old.filter(pc.invert(pc.is_in(old["trial_id"], value_set=replacing)))
        new = pa.concat_tables([old, new])
    folder.write_table(name, new)


def save(folder: RunFolder, board: pd.DataFrame, hyperparameters: Iterable[str]) -> None:
    """Write a whole leaderboard (e.g. after the final evaluation filled its test columns)."""
    folder.write_table(runfolder.LEADERBOARD, table(board.to_dict("records"), schema(hyperparameters)))


# On a small validation split many trials tie on the search metric (one image of 52 apart); the
# validation loss, which every epoch also reports, says which of them is more sure of being right,
# and where that ties too, the calibration error says whose confidence is the more honest.
TIE_BREAKS = ("val_loss", "val_ece")


def ranked(board: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Best first by ``metric``; ties broken by the validation loss (lower first), then by the
    validation calibration error (lower first), then by the order of the rows (the order trials
    finished); failed trials last.

    >>> board = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "status": ["completed"] * 4,
    ...                       "val_balanced_accuracy": [0.98, 0.98, 0.90, 0.98],
    ...                       "val_loss": [0.30, 0.12, 0.05, 0.12], "val_ece": [0.01, 0.08, 0.02, 0.04]})
    >>> ranked(board, "val_balanced_accuracy", "max")["trial_id"].tolist()
    ['d', 'b', 'a', 'c']
    """
    failed = board["status"].isin(FAILED)
    keys = [metric] + [k for k in TIE_BREAKS if k != metric and k in board]
    ok = board[~failed].sort_values(keys, ascending=[mode == "min"] + [True] * (len(keys) - 1),
                                    na_position="last", kind="stable")
    return pd.concat([ok, board[failed]], ignore_index=True)


def tied_with_top(board: pd.DataFrame, metric: str, mode: str) -> pd.Series:
    """True for a trial whose ``metric`` is within the top trial's standard error of the top's
    (``<metric>_se``, the top itself included): the validation split cannot tell them apart, so
    the choice among them is noise and their ensemble the robust pick. False for the others;
    null for failed trials, rows that are not trials (the ensemble) and metrics without a
    standard error (a cost objective, a table from before standard errors).

    >>> board = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["completed"] * 3,
    ...                       "val_balanced_accuracy": [0.98, 0.96, 0.90],
    ...                       "val_balanced_accuracy_se": [0.02, 0.03, 0.04]})
    >>> tied_with_top(board, "val_balanced_accuracy", "max").tolist()
    [True, True, False]
    """
    tied = pd.Series(None, index=board.index, dtype="object")
    column = f"{metric}_se"
    trials = board[~board["status"].isin(FAILED) & (board["status"] != TrialStatus.ENSEMBLE.value)]
    if column not in board or trials[metric].notna().sum() == 0:
        return tied
    top = ranked(trials, metric, mode).iloc[0]
    if not pd.notna(top[column]):
        return tied
    # a hair of slack: a float sum that lands exactly one standard error away counts as within it
    within = (trials[metric] - top[metric]).abs() <= top[column] + 1e-12
    tied[trials.index] = within  # a trial without a score compares as NaN: not within
    return tied


def pareto_front(board: pd.DataFrame, objectives: list[str], directions: list[str]) -> pd.Series:
    """True for a trial that no other trial beats or equals on every objective and beats on one.

    >>> board = pd.DataFrame({"status": ["completed"] * 3, "val_balanced_accuracy": [0.9, 0.8, 0.85],
    ...                       "params": [20e6, 5e6, 30e6]})
    >>> pareto_front(board, ["val_balanced_accuracy", "params"], ["max", "min"]).tolist()
    [True, True, False]
    """
    signed = pd.DataFrame({o: board[o] * (1 if d == "max" else -1) for o, d in zip(objectives, directions)})
    usable = signed.notna().all(axis=1) & ~board["status"].isin(FAILED)
    values = signed[usable].to_numpy(dtype=float)
    front = pd.Series(False, index=board.index)
    for i, row in zip(signed.index[usable], values):
        dominated = ((values >= row).all(axis=1) & (values > row).any(axis=1)).any()
        front[i] = not dominated
    return front


def run_folder(location: str | Path) -> RunFolder:
    """The run folder of a location: the folder itself, or its leaderboard file."""
    parent, name = uris.split_last(location)
    return RunFolder.at(parent if name == runfolder.LEADERBOARD else location)


def load(runs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The leaderboard of one run, or of several merged, best trial first by the search metric
    and mode of the (first) run's ``config.yaml``; failed trials last. A run is a folder (or
    its leaderboard file), local or a URI.

    >>> board = leuktune.load_leaderboard("runs/synthetic-default")  # doctest: +SKIP
    >>> board = leuktune.load_leaderboard(["runs/cnmc-a", "s3://bucket/runs/cnmc-b"])  # doctest: +SKIP
    """
    locations = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not locations:
        raise LeaderboardError("no run folder given")
    folders = [run_folder(location) for location in locations]
    for location, folder in zip(locations, folders):
        if not folder.exists(runfolder.LEADERBOARD):
            raise LeaderboardError(f"{location}: no leaderboard (expected a run folder holding "
                                   f"{runfolder.LEADERBOARD}, or the file itself); a search writes one when its "
                                   "first trial ends")
    board = pd.concat([folder.read_frame(runfolder.LEADERBOARD) for folder in folders], ignore_index=True)
    metric, mode = DEFAULT_METRIC, metrics.mode(DEFAULT_METRIC)
    if folders[0].exists(runfolder.CONFIG):
        search = folders[0].saved_config(validate=False).get("search", {})
        metric, mode = search.get("metric", metric), search.get("mode", mode)
    board = ranked(board, metric, mode)
    board.attrs["paths"] = [folder.uri(folder.file(runfolder.LEADERBOARD)) for folder in folders]
    return board
