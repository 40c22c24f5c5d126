"""The one leaderboard schema: ``leaderboard.parquet`` (a row per trial) and
``history.parquet`` (a row per trial-epoch), readable by pandas, pyarrow, DuckDB, Polars.

Rows are appended as trials finish, by rewriting the file to a temporary name and
renaming it over the old one, so a search killed at any moment leaves a complete,
readable file holding every trial that had finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from leuktune import runfolder
from leuktune.metrics import METRICS

# Columns every row has, in order; searched hyperparameters go between the
# identification columns and the results.
ID_COLUMNS = ["experiment", "trial_id", "status"]
RESULT_COLUMNS = (
    ["best_epoch", "epochs_run", "stopped_by"]  # stopped_by: asha | patience | null
    + [f"val_{m}" for m in METRICS] + ["val_confusion_matrix"]  # rows = true class, columns = predicted
    + [f"test_{m}" for m in METRICS] + ["test_confusion_matrix"]
    + ["params", "trainable_params", "unfreeze_depth_effective", "stage_groups", "backbone_activation",
       "workers", "precision", "train_seconds", "device", "checkpoint_uri",
       "started_at", "finished_at", "leuktune_version", "data_fingerprint",
       "error", "error_file"]  # error: the exception's type and message; error_file: Ray's full record
)


class LeaderboardError(ValueError):
    """A leaderboard that cannot be found or read, naming the path."""


def append(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Add rows to a Parquet table atomically (write aside, then rename)."""
    path = Path(path)
    new = pd.DataFrame(list(rows))
    if new.empty:
        return
    table = pd.concat([pd.read_parquet(path), new], ignore_index=True) if path.is_file() else new
    table = _uniform_columns(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _uniform_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A column whose values mix types (unfreeze_depth: 2 or "all") is stored as text,
    since a Parquet column has one type. Nested lists (confusion matrices) come back from
    Parquet as arrays; they are turned back into lists so old and new rows agree."""
    for col in table.columns[table.dtypes == object]:
        table[col] = table[col].map(_as_list)
        kinds = {type(v) for v in table[col] if _present(v)}
        if len(kinds) > 1:
            table[col] = table[col].map(lambda v: str(v) if _present(v) else v)
    return table


def _as_list(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = list(value)
    return [_as_list(v) for v in value] if isinstance(value, list) else value


def _present(value: Any) -> bool:
    return value is not None and (isinstance(value, list) or value == value)


def order_columns(row: dict[str, Any], hyperparameters: Iterable[str]) -> dict[str, Any]:
    cols = ID_COLUMNS + list(hyperparameters) + RESULT_COLUMNS
    return {c: row.get(c) for c in cols}


def ranked(board: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Best first; failed trials last."""
    ok = board[board["status"] != "error"].sort_values(metric, ascending=(mode == "min"), na_position="last")
    return pd.concat([ok, board[board["status"] == "error"]], ignore_index=True)


def _run_files(path: str | Path) -> tuple[Path, Path]:
    """(leaderboard file, the run's config.yaml) for a run folder or a leaderboard file."""
    path = Path(path).expanduser()
    board = path / runfolder.LEADERBOARD if path.is_dir() else path
    if not board.is_file():
        raise LeaderboardError(f"{path}: no leaderboard (expected a run folder holding {runfolder.LEADERBOARD}, "
                               "or the file itself); a search writes one when its first trial ends")
    return board, board.parent / runfolder.CONFIG


def load(runs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The leaderboard of one run, or of several merged, best trial first by the search metric
    and mode of the (first) run's ``config.yaml``; failed trials last.

    >>> board = leuktune.load_leaderboard("runs/synthetic-default")  # doctest: +SKIP
    >>> board = leuktune.load_leaderboard(["runs/cnmc-a", "runs/cnmc-b"])  # doctest: +SKIP
    """
    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not paths:
        raise LeaderboardError("no run folder given")
    files = [_run_files(p) for p in paths]
    board = pd.concat([pd.read_parquet(b) for b, _ in files], ignore_index=True)
    metric, mode = "val_balanced_accuracy", "max"
    config = files[0][1]
    if config.is_file():
        search = (yaml.safe_load(config.read_text()) or {}).get("search", {})
        metric, mode = search.get("metric", metric), search.get("mode", mode)
    board = ranked(board, metric, mode)
    board.attrs["paths"] = [str(b) for b, _ in files]
    return board
