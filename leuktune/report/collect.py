"""What a report reads: one run's or several runs' tables, as far as they exist (a search
still running has a leaderboard of what has finished; a search never evaluated has no test
predictions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leuktune import leaderboard, runfolder
from leuktune.config import ExperimentConfig
from leuktune.runfolder import RunFolder


@dataclass
class Inputs:
    folders: list[RunFolder]
    config: ExperimentConfig  # the first run's
    board: pd.DataFrame  # ranked, merged
    history: pd.DataFrame
    evaluation: pd.DataFrame
    predictions: pd.DataFrame
    refit_folds: pd.DataFrame  # the chosen trials retrained on folds (evaluate --refit-folds), a row per fold
    split: pd.DataFrame
    rejected: pd.DataFrame
    near_duplicates: pd.DataFrame
    external: pd.DataFrame  # every external set's metrics (python -m leuktune.evaluate RUN --external ROOT)

    @property
    def metric(self) -> str:
        return self.config.search.metric

    @property
    def trials(self) -> pd.DataFrame:
        """The board's trials, without the ensemble's row."""
        return leaderboard.trial_rows(self.board)

    @property
    def ensemble(self) -> pd.Series | None:
        """The ensemble's row (the first run's, when several are merged), or None."""
        rows = self.board[self.board["trial_id"] == leaderboard.ENSEMBLE_ID]
        return rows.iloc[0] if len(rows) else None

    @property
    def searched(self) -> list[str]:
        return [c for c in self.config.searched() if c in self.board]


def _table(folders: list[RunFolder], name: str) -> pd.DataFrame:
    """One table of every run, merged (read under today's names, whichever release wrote it)."""
    frames = [frame for frame in (leaderboard.read_renamed(f, name) for f in folders) if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collect(runs: list[str | Path | RunFolder]) -> Inputs:
    folders = [run if isinstance(run, RunFolder) else leaderboard.run_folder(run) for run in runs]
    board = leaderboard.load([f.uri() for f in folders])
    first = folders[0]
    config = first.saved_config() if first.exists(runfolder.CONFIG) else ExperimentConfig()
    # the trials' own epochs: a held-out site's rows (search.cv: sites) are not a trial's curve
    history = leaderboard.held_out.trial_epochs(_table(folders, runfolder.HISTORY))
    return Inputs(folders, config, board, history, _table(folders, runfolder.EVALUATION),
                  _table(folders, runfolder.PREDICTIONS), _table(folders, runfolder.REFIT_FOLDS), _table([first], runfolder.SPLIT),
                  _table([first], runfolder.REJECTED), _table([first], runfolder.NEAR_DUPLICATES),
                  leaderboard.external_metrics(first))
