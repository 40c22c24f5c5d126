"""The run's result tables, typed, and the leaderboard derived from them (readable by pandas,
pyarrow, DuckDB, Polars): ``schemas`` (every table's columns), ``tables`` (rows into a table,
atomically), ``held_out`` (each held-out site's rows under search.cv: sites),
``ranking`` (best first, the Pareto front), ``ties`` (which trials the validation
split cannot tell from the top), ``derived`` (the leaderboard derived and loaded), ``migration``
(a run of an earlier release given its stages' tables).
"""

from leuktune.leaderboard import held_out
from leuktune.leaderboard.derived import (LeaderboardError, derive, ensemble, external_metrics, history, load,
                                          read_renamed, refit_folds, refit_summary, renamed, run_folder, tests,
                                          trials, write)
from leuktune.leaderboard.migration import migrate
from leuktune.leaderboard.ranking import TIE_BREAKS, pareto_front, ranked, trial_rows
from leuktune.leaderboard.schemas import (CONFUSION, ENSEMBLE_COLUMNS, ENSEMBLE_ID, HISTORY, HISTORY_COLUMNS,
                                          ID_COLUMNS, REFIT_COLUMNS, RENAMED, RESULT_COLUMNS, SEARCH_COLUMNS, SITES,
                                          TEST, TEST_COLUMNS, TIE_COLUMNS, WORST_COLUMNS, arrow_type, schema,
                                          trials_schema)
from leuktune.leaderboard.tables import append, conformed, table
from leuktune.leaderboard.ties import Resampled, ValPredictions, resample, ties, tied_with_top

__all__ = [
    "CONFUSION", "ENSEMBLE_COLUMNS", "ENSEMBLE_ID", "HISTORY", "HISTORY_COLUMNS", "ID_COLUMNS", "REFIT_COLUMNS",
    "RENAMED", "RESULT_COLUMNS", "SEARCH_COLUMNS", "SITES", "TEST", "WORST_COLUMNS", "held_out",
    "TEST_COLUMNS", "TIE_BREAKS", "TIE_COLUMNS",
    "LeaderboardError", "Resampled", "ValPredictions", "append", "arrow_type", "conformed", "derive", "ensemble",
    "external_metrics", "history", "load", "migrate", "pareto_front", "ranked", "read_renamed", "refit_folds",
    "refit_summary", "renamed", "resample", "run_folder", "schema", "table", "tests", "ties", "tied_with_top",
    "trial_rows", "trials", "trials_schema", "write",
]
