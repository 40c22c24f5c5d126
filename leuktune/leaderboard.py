"""The run's result tables, typed: the search's ``trials.parquet`` (a row per trial) and
``history.parquet`` (a row per trial-epoch), the final evaluation's ``test.parquet`` (a row per
model scored), and the ``leaderboard.parquet`` derived from them with the ensemble's record and
the cross-validation (a row per trial, and one for the ensemble), readable by pandas, pyarrow,
DuckDB, Polars.

Every column has one Arrow type whatever values a search draws: a hyperparameter's type
comes from its field in the schema (``unfreeze_depth``, an integer or "all", is always text).
Rows are appended as trials finish, by writing the whole table aside and renaming it over
the old one (one request in a bucket), so a search killed at any moment leaves a complete,
readable file holding every trial that had finished. Each stage writes its own table and then
the derived leaderboard (``write``); ``load`` derives it afresh and writes nothing.
"""

from __future__ import annotations

import dataclasses
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
from leuktune.results import FAILED, EnsembleRecord
from leuktune.runfolder import RunFolder

CONFUSION = pa.list_(pa.list_(pa.int64()))  # rows = true class, columns = predicted
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
# cross-validation (python -m leuktune.evaluate RUN --cv K): from cv.parquet's folds, mean and standard deviation
CV_COLUMNS = [("cv_folds", pa.int64()), *((f"cv_{m}_{stat}", pa.float64()) for m in METRICS for stat in ("mean", "std"))]
# the search's (``trials.parquet``): a row per trial, as the search recorded it when the trial ended
SEARCH_COLUMNS = [
    ("best_epoch", pa.int64()), ("epochs_run", pa.int64()), ("stopped_by", pa.string()),
    *((f"val_{m}", pa.float64()) for m in METRICS), ("val_confusion_matrix", CONFUSION),
    # each val metric's bootstrap standard error on the validation split (patients resampled where
    # the data names them), and whether the trial's search metric is within the top trial's
    # standard error of the top: the validation split cannot tell it from the top
    *((f"val_{m}_se", pa.float64()) for m in METRICS), ("tied_with_top", pa.bool_()),
    # a cross-validated trial (search.cv): its folds, and the standard deviation of each val metric over them
    ("val_folds", pa.int64()), *((f"val_{m}_fold_std", pa.float64()) for m in METRICS),
    ("params", pa.int64()), ("trainable_params", pa.int64()), ("inference_ms", pa.float64()),
    ("pareto_front", pa.bool_()),  # multi-objective searches: not dominated on every objective
    ("unfreeze_depth_effective", pa.int64()), ("stage_groups", pa.int64()), ("backbone_activation", pa.string()),
    ("workers", pa.int64()), ("precision", pa.string()), ("train_seconds", pa.float64()), ("device", pa.string()),
    # where it ran (its last epoch: a trial restarted after a lost node names the new one), and what
    # it cost: train_seconds x the CPUs and GPUs the trial held
    ("node_ip", pa.string()), ("node_id", pa.string()), ("cpu_seconds", pa.float64()), ("gpu_seconds", pa.float64()),
    # a frozen backbone's cached features: computed or loaded, views per image, views this trial computed
    ("frozen_features", pa.string()), ("feature_views", pa.int64()), ("feature_views_computed", pa.int64()),
    # the trial's best checkpoint, relative to the run folder (tune/<trial>/checkpoint_000007); load()
    # gives it as a path or URI of where the run is read from
    ("checkpoint_uri", pa.string()), ("started_at", pa.string()), ("finished_at", pa.string()),
    ("leuktune_version", pa.string()), ("data_fingerprint", pa.string()),
    ("error", pa.string()), ("error_file", pa.string()),  # the exception's type and message; Ray's full record
]
_SEARCH = dict(SEARCH_COLUMNS)
# The leaderboard's columns after the hyperparameters, in the order an earlier release wrote them.
RESULT_COLUMNS = [
    *((name, _SEARCH[name]) for name in ("best_epoch", "epochs_run", "stopped_by")),
    *((f"val_{m}", pa.float64()) for m in METRICS), ("val_confusion_matrix", CONFUSION),
    *((f"val_{m}_se", pa.float64()) for m in METRICS), ("tied_with_top", pa.bool_()),
    ("val_folds", pa.int64()), *((f"val_{m}_fold_std", pa.float64()) for m in METRICS),
    *TEST_COLUMNS, *ENSEMBLE_COLUMNS, *CV_COLUMNS,
    *SEARCH_COLUMNS[SEARCH_COLUMNS.index(("params", pa.int64())):],
]
# The ensemble's id wherever models are named (its leaderboard row's trial_id and status, test.parquet,
# the evaluation's tables; trial="ensemble" of load_model, predict and export): it is not a trial.
ENSEMBLE_ID = "ensemble"
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


def trials_schema(hyperparameters: Iterable[str]) -> pa.Schema:
    """The search's table (``trials.parquet``): the leaderboard's columns that the search writes."""
    return pa.schema([*ID_COLUMNS, *((h, arrow_type(VALUE_TYPES[h])) for h in hyperparameters), *SEARCH_COLUMNS])


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
    null for failed trials and metrics without a standard error (a cost objective, a table from
    before standard errors).

    >>> board = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["completed"] * 3,
    ...                       "val_balanced_accuracy": [0.98, 0.96, 0.90],
    ...                       "val_balanced_accuracy_se": [0.02, 0.03, 0.04]})
    >>> tied_with_top(board, "val_balanced_accuracy", "max").tolist()
    [True, True, False]
    """
    tied = pd.Series(None, index=board.index, dtype="object")
    column = f"{metric}_se"
    trials = board[~board["status"].isin(FAILED)]
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
    """The run folder of a location, where it is now: the folder itself, or its leaderboard file."""
    parent, name = uris.split_last(location)
    return RunFolder.existing(parent if name == runfolder.LEADERBOARD else location)


# -- the stages' tables, and the leaderboard derived from them

def _earlier_release(folder: RunFolder) -> pd.DataFrame | None:
    """The whole leaderboard of a run written before each stage had its own table, or None."""
    if folder.exists(runfolder.TRIALS_TABLE) or not folder.exists(runfolder.LEADERBOARD):
        return None
    return folder.read_frame(runfolder.LEADERBOARD)


def _hyperparameters(columns: Iterable[str]) -> list[str]:
    """The searched hyperparameters among a table's columns: those that are neither ids nor results."""
    fixed = {name for name, _ in (*ID_COLUMNS, *RESULT_COLUMNS)}
    return [c for c in columns if c not in fixed]


def _searched_part(old: pd.DataFrame) -> pd.DataFrame:
    """An earlier release's leaderboard as the search's table: its trials' rows, the search's columns."""
    kept = {name for name, _ in (*ID_COLUMNS, *SEARCH_COLUMNS)} | set(_hyperparameters(old.columns))
    rows = old[old["trial_id"] != ENSEMBLE_ID]
    return rows[[c for c in rows.columns if c in kept]].reset_index(drop=True)


def _tested_part(old: pd.DataFrame) -> pd.DataFrame:
    """An earlier release's leaderboard as the evaluation's table: the rows scored on the test split."""
    if "test_balanced_accuracy" not in old:
        return pd.DataFrame(columns=TEST.names)
    return old[old["test_balanced_accuracy"].notna()][[c for c in TEST.names if c in old]].reset_index(drop=True)


def trials(folder: RunFolder) -> pd.DataFrame:
    """The search's table: a row per trial that ended, in the order they ended (checkpoints
    relative to the run); empty before the first."""
    if folder.exists(runfolder.TRIALS_TABLE):
        return folder.read_frame(runfolder.TRIALS_TABLE)
    old = _earlier_release(folder)
    return pd.DataFrame() if old is None else _searched_part(old)


def tests(folder: RunFolder) -> pd.DataFrame:
    """The final evaluation's table: a row per model scored on the test split (the ensemble's
    ``trial_id`` is ``ensemble``); empty before the evaluation."""
    if folder.exists(runfolder.TEST):
        return folder.read_frame(runfolder.TEST)
    old = _earlier_release(folder)
    return pd.DataFrame(columns=TEST.names) if old is None else _tested_part(old)


def external_metrics(folder: RunFolder) -> pd.DataFrame:
    """Every external set's metrics table of the run (``external/<name>.parquet``, not their
    predictions), one frame; empty before the first."""
    names = [n for n in folder.listdir(folder.file(runfolder.EXTERNAL)) if n.endswith(".parquet") and n.count(".") == 1]
    frames = [folder.read_frame(f"{runfolder.EXTERNAL}/{n}") for n in names]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def ensemble(folder: RunFolder) -> EnsembleRecord | None:
    """The final evaluation's ensemble (``ensemble.json``), or None."""
    if not folder.exists(runfolder.ENSEMBLE):
        return None
    return EnsembleRecord.from_json(folder.read_text(runfolder.ENSEMBLE))


def cv_summary(per_fold: pd.DataFrame) -> dict:
    """The leaderboard's cv_* columns of one trial's folds: how many, each metric's mean and standard deviation."""
    return {"cv_folds": len(per_fold), **{f"cv_{m}_{stat}": float(getattr(per_fold[m], stat)())
                                           for m in METRICS for stat in ("mean", "std")}}


def derive(folder: RunFolder) -> pd.DataFrame:
    """The leaderboard (today's columns, unranked) from the stages' tables: the search's trials,
    their test figures, their cross-validation, and the ensemble's row. Reads only."""
    board = trials(folder)
    if board.empty:
        return board
    record = ensemble(folder)
    if record is not None:
        first = board[board["trial_id"] == record.members[0]]
        members = board.set_index("trial_id").reindex(record.members)
        board = pd.concat([board, pd.DataFrame([{
            "experiment": board["experiment"].iloc[0], "trial_id": ENSEMBLE_ID, "status": ENSEMBLE_ID,
            **{f"val_{m}": record.val_scores.get(m) for m in METRICS},
            "members": record.members, "weights": record.weights, "checkpoint_uri": runfolder.ENSEMBLE,
            "params": int(members["params"].sum()) if members["params"].notna().all() else None,
            "data_fingerprint": record.data_fingerprint or (first["data_fingerprint"].iloc[0] if len(first) else None),
        }])], ignore_index=True)
    scored = tests(folder)
    if len(scored):
        board = board.drop(columns=[c for c in TEST.names if c != "trial_id" and c in board])
        board = board.merge(scored, on="trial_id", how="left")
    if folder.exists(runfolder.CV):
        folds = folder.read_frame(runfolder.CV)
        summary = pd.DataFrame([{"trial_id": t, **cv_summary(f)} for t, f in folds.groupby("trial_id", sort=False)])
        board = board.drop(columns=[c for c in summary.columns if c != "trial_id" and c in board])
        board = board.merge(summary, on="trial_id", how="left")
    return board.reindex(columns=[*(name for name, _ in ID_COLUMNS), *_hyperparameters(board.columns),
                                  *(name for name, _ in RESULT_COLUMNS)])


def write(folder: RunFolder) -> None:
    """Derive the leaderboard and store it in the run (``leaderboard.parquet``, for pandas,
    DuckDB and Polars; ranked, checkpoints relative to the run): each stage calls this after
    writing its own table."""
    board = _ranked_by_its_config(folder, derive(folder))
    folder.write_table(runfolder.LEADERBOARD, table(board.to_dict("records"), schema(_hyperparameters(board.columns))))


def migrate(folder: RunFolder) -> None:
    """A run written before each stage had its own table, given them (once, by the first stage
    that writes into it again: a resumed search, an evaluation): the search's rows and the test
    figures of its one leaderboard, checkpoints made relative to the run. Its checkpoints are not
    touched (the temperature an earlier release kept there is in ``test.parquet`` now)."""
    old = _earlier_release(folder)
    if old is None:
        return
    searched = _searched_part(old)
    searched["checkpoint_uri"] = [folder.relative(value) for value in searched["checkpoint_uri"]]
    folder.write_table(runfolder.TEST, table(_tested_part(old).to_dict("records"), TEST))
    record = ensemble(folder)
    if record is not None:
        folder.write_text(runfolder.ENSEMBLE, dataclasses.replace(
            record, checkpoints=[folder.relative(c) for c in record.checkpoints]).to_json())
    # last: the search's table is what marks a run as migrated
    folder.write_table(runfolder.TRIALS_TABLE, table(searched.to_dict("records"),
                                                     trials_schema(_hyperparameters(searched.columns))))
    write(folder)


def _ranked_by_its_config(folder: RunFolder, board: pd.DataFrame) -> pd.DataFrame:
    """``ranked`` by the search metric and mode of the run's ``config.yaml`` (the default ones without it)."""
    metric, mode = DEFAULT_METRIC, metrics.mode(DEFAULT_METRIC)
    if folder.exists(runfolder.CONFIG):
        search = folder.saved_config(validate=False).get("search", {})
        metric, mode = search.get("metric", metric), search.get("mode", mode)
    return ranked(board, metric, mode) if len(board) else board


def trial_rows(board: pd.DataFrame) -> pd.DataFrame:
    """A leaderboard's rows of trials (not the ensemble's)."""
    return board[board["trial_id"] != ENSEMBLE_ID]


def load(runs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The leaderboard of one run, or of several merged, best trial first by the search metric
    and mode of the (first) run's ``config.yaml``; failed trials last. A run is a folder (or
    its leaderboard file), local or a URI, where it is now: ``checkpoint_uri`` is a path or URI
    of that place. Reads only.

    >>> board = leuktune.load_leaderboard("runs/synthetic-default")  # doctest: +SKIP
    >>> board = leuktune.load_leaderboard(["runs/cnmc-a", "s3://bucket/runs/cnmc-b"])  # doctest: +SKIP
    """
    locations = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not locations:
        raise LeaderboardError("no run folder given")
    boards = []
    for location in locations:
        parent, name = uris.split_last(location)
        folder = RunFolder.at(parent if name == runfolder.LEADERBOARD else location)
        if not folder.exists(runfolder.TRIALS_TABLE) and not folder.exists(runfolder.LEADERBOARD):
            raise LeaderboardError(f"{location}: no leaderboard (expected a run folder holding "
                                   f"{runfolder.LEADERBOARD}, or the file itself); a search writes one when its "
                                   "first trial ends")
        board = derive(folder)  # an earlier release's one leaderboard is read through the stages' readers too
        board["checkpoint_uri"] = [folder.located(value) for value in board["checkpoint_uri"]]
        boards.append((folder, board))
    board = _ranked_by_its_config(boards[0][0], pd.concat([b for _, b in boards], ignore_index=True))
    board.attrs["paths"] = [folder.uri(folder.file(runfolder.LEADERBOARD)) for folder, _ in boards]
    return board
