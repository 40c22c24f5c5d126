"""The leaderboard derived from the stages' tables: each stage writes its own table and then
the derived leaderboard (``write``); ``load`` derives it afresh and writes nothing. A run written
before each stage had its own table is read through the same readers (its one leaderboard, split),
and every table an earlier release wrote is read with its columns and files under today's names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from leuktune import metrics, runfolder, uris
from leuktune.config.search import DEFAULT_METRIC
from leuktune.errors import LeuktuneError
from leuktune.leaderboard.ranking import ranked
from leuktune.leaderboard.schemas import (ENSEMBLE_ID, ID_COLUMNS, RENAMED, RESULT_COLUMNS, SEARCH_COLUMNS, TEST,
                                          TEST_WORST_COLUMNS, schema, searched_hyperparameters)
from leuktune.leaderboard.tables import table
from leuktune.metrics import METRICS
from leuktune.results import EnsembleRecord
from leuktune.runfolder import RunFolder


class LeaderboardError(LeuktuneError, ValueError):
    """A leaderboard that cannot be found or read, naming the path."""


def run_folder(location: str | Path) -> RunFolder:
    """The run folder of a location, where it is now: the folder itself, or its leaderboard file."""
    parent, name = uris.split_last(location)
    return RunFolder.existing(parent if name == runfolder.LEADERBOARD else location)


# -- an earlier release's one leaderboard, read as the stages' tables

def earlier_release(folder: RunFolder) -> pd.DataFrame | None:
    """The whole leaderboard of a run written before each stage had its own table, or None."""
    if folder.exists(runfolder.TRIALS_TABLE) or not folder.exists(runfolder.LEADERBOARD):
        return None
    return renamed(folder.read_frame(runfolder.LEADERBOARD))


def renamed(table: pd.DataFrame) -> pd.DataFrame:
    """A table an earlier release wrote, its columns under today's names (``RENAMED``)."""
    return table.rename(columns={old: new for old, new in RENAMED.items() if old in table and new not in table})


def read_renamed(folder: RunFolder, name: str) -> pd.DataFrame:
    """One of the run's tables (today's file name, else the one an earlier release gave it), its
    columns under today's names; empty when the run has neither."""
    for stored in (name, *(old for old, new in runfolder.RENAMED_FILES.items() if new == name)):
        if folder.exists(stored):
            return renamed(folder.read_frame(stored))
    return pd.DataFrame()


def searched_part(old: pd.DataFrame) -> pd.DataFrame:
    """An earlier release's leaderboard as the search's table: its trials' rows, the search's columns."""
    kept = {name for name, _ in (*ID_COLUMNS, *SEARCH_COLUMNS)} | set(searched_hyperparameters(old.columns))
    rows = old[old["trial_id"] != ENSEMBLE_ID]
    return rows[[c for c in rows.columns if c in kept]].reset_index(drop=True)


def tested_part(old: pd.DataFrame) -> pd.DataFrame:
    """An earlier release's leaderboard as the evaluation's table: the rows scored on the test split."""
    if "test_balanced_accuracy" not in old:
        return pd.DataFrame(columns=TEST.names)
    return old[old["test_balanced_accuracy"].notna()][[c for c in TEST.names if c in old]].reset_index(drop=True)


# -- the stages' tables, and the leaderboard derived from them

def trials(folder: RunFolder) -> pd.DataFrame:
    """The search's table: a row per trial that ended, in the order they ended (checkpoints
    relative to the run); empty before the first."""
    if folder.exists(runfolder.TRIALS_TABLE):
        return read_renamed(folder, runfolder.TRIALS_TABLE)
    old = earlier_release(folder)
    return pd.DataFrame() if old is None else searched_part(old)


def tests(folder: RunFolder) -> pd.DataFrame:
    """The final evaluation's table: a row per model scored on the test split (the ensemble's
    ``trial_id`` is ``ensemble``); empty before the evaluation."""
    if folder.exists(runfolder.TEST):
        return folder.read_frame(runfolder.TEST)
    old = earlier_release(folder)
    return pd.DataFrame(columns=TEST.names) if old is None else tested_part(old)


def test_by_site(folder: RunFolder) -> pd.DataFrame:
    """The final evaluation by site (``test_by_site.parquet``): a row per model and site of the test
    split; empty before the evaluation (and for a run evaluated by an earlier release)."""
    return folder.read_frame(runfolder.TEST_BY_SITE) if folder.exists(runfolder.TEST_BY_SITE) else pd.DataFrame()


def worst_by_site(per_site: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard's ``test_<metric>_worst`` of each model (trial_id) from its rows by site:
    the lowest value over its sites, the highest for a metric where lower is better (loss, ece).

    >>> rows = pd.DataFrame({"trial_id": ["a", "a"], "site": ["x", "y"], "balanced_accuracy": [0.9, 0.6],
    ...                      "loss": [0.2, 0.7]})
    >>> worst = worst_by_site(rows)
    >>> worst["test_balanced_accuracy_worst"].item(), worst["test_loss_worst"].item()
    (0.6, 0.7)
    """
    grouped = per_site.groupby("trial_id", sort=False)
    worst = {f"test_{m}_worst": grouped[m].max() if metrics.mode(m) == "min" else grouped[m].min()
             for m in METRICS if m in per_site}
    return pd.DataFrame(worst).reset_index()


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


def history(folder: RunFolder) -> pd.DataFrame:
    """The search's table of epochs (``history.parquet``): a row per trial and validated epoch;
    empty before the first trial ends."""
    return read_renamed(folder, runfolder.HISTORY)


def refit_folds(folder: RunFolder) -> pd.DataFrame:
    """The chosen trials retrained on folds (``refit_folds.parquet``; ``cv.parquet`` of an earlier
    release): a row per trial and fold with its test metrics; empty before the first."""
    return read_renamed(folder, runfolder.REFIT_FOLDS)


def refit_summary(per_fold: pd.DataFrame) -> dict:
    """The leaderboard's refit_* columns of one trial's folds: how many, each metric's mean and standard deviation."""
    return {"refit_folds": len(per_fold), **{f"refit_{m}_{stat}": float(getattr(per_fold[m], stat)())
                                              for m in METRICS for stat in ("mean", "std")}}


def derive(folder: RunFolder) -> pd.DataFrame:
    """The leaderboard (today's columns, unranked) from the stages' tables: the search's trials,
    their test figures (and their worst test site's), their retraining on folds, and the ensemble's
    row. Reads only."""
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
            "members": record.members, "weights": record.weights, "checkpoint": runfolder.ENSEMBLE,
            "params": int(members["params"].sum()) if members["params"].notna().all() else None,
            "data_fingerprint": record.data_fingerprint or (first["data_fingerprint"].iloc[0] if len(first) else None),
        }])], ignore_index=True)
    scored = tests(folder)
    if len(scored):
        board = board.drop(columns=[c for c in TEST.names if c != "trial_id" and c in board])
        board = board.merge(scored, on="trial_id", how="left")
    per_site = test_by_site(folder)
    if len(per_site):
        board = board.drop(columns=[name for name, _ in TEST_WORST_COLUMNS if name in board])
        board = board.merge(worst_by_site(per_site), on="trial_id", how="left")
    folds = refit_folds(folder)
    if len(folds):
        summary = pd.DataFrame([{"trial_id": t, **refit_summary(f)} for t, f in folds.groupby("trial_id", sort=False)])
        board = board.drop(columns=[c for c in summary.columns if c != "trial_id" and c in board])
        board = board.merge(summary, on="trial_id", how="left")
    return board.reindex(columns=[*(name for name, _ in ID_COLUMNS), *searched_hyperparameters(board.columns),
                                  *(name for name, _ in RESULT_COLUMNS)])


def write(folder: RunFolder) -> None:
    """Derive the leaderboard and store it in the run (``leaderboard.parquet``, for pandas,
    DuckDB and Polars; ranked, checkpoints relative to the run): each stage calls this after
    writing its own table."""
    board = _ranked_by_its_config(folder, derive(folder))
    columns = schema(searched_hyperparameters(board.columns))
    folder.write_table(runfolder.LEADERBOARD, table(board.to_dict("records"), columns))


def _ranked_by_its_config(folder: RunFolder, board: pd.DataFrame) -> pd.DataFrame:
    """``ranked`` by the search metric and mode of the run's ``config.yaml`` (the default ones without it)."""
    metric, mode = DEFAULT_METRIC, metrics.mode(DEFAULT_METRIC)
    if folder.exists(runfolder.CONFIG):
        search = folder.saved_config(validate=False).get("search", {})
        metric, mode = search.get("metric", metric), search.get("mode", mode)
    return ranked(board, metric, mode) if len(board) else board


def load(runs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The leaderboard of one run, or of several merged, best trial first by the search metric
    and mode of the (first) run's ``config.yaml``; failed trials last. A run is a folder (or
    its leaderboard file), local or a URI, where it is now: ``checkpoint_uri`` (beside ``checkpoint``,
    relative to the run) is a path or URI of that place. Reads only.

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
        board.insert(board.columns.get_loc("checkpoint") + 1, "checkpoint_uri",
                     [folder.located(value) for value in board["checkpoint"]])
        boards.append((folder, board))
    board = _ranked_by_its_config(boards[0][0], pd.concat([b for _, b in boards], ignore_index=True))
    board.attrs["paths"] = [folder.uri(folder.file(runfolder.LEADERBOARD)) for folder, _ in boards]
    return board
