"""The order of a leaderboard's trials: best first with the tie breaks, and the Pareto front of
a multi-objective search (which trials are tied with the top: leuktune.leaderboard.ties).
"""

from __future__ import annotations

import pandas as pd

from leuktune.leaderboard.schemas import ENSEMBLE_ID
from leuktune.results import FAILED


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


def trial_rows(board: pd.DataFrame) -> pd.DataFrame:
    """A leaderboard's rows of trials (not the ensemble's)."""
    return board[board["trial_id"] != ENSEMBLE_ID]
