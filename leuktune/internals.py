"""Every use of a private name of Ray or Optuna, in one place.

leuktune reaches into two frameworks where their public API offers no way to do the job:
Ray Tune's ``OptunaSearch`` keeps its Optuna study and trials in underscore attributes (the
searcher tells Optuna what ASHA saw, leuktune.search.searcher), ``ASHAScheduler`` its metric,
mode, time attribute, last rung and count of stopped trials (leuktune.search.scheduler feeds it
a score and spares the search's starts), and Ray Train logs every report through a logger that
only its private module names. A new release may rename any of these;
``tests/test_structure.py`` checks that each still exists, and pyproject's upper bounds on Ray
and Optuna are the newest releases the tests have passed with.

The frameworks are imported inside the functions: importing this module costs nothing, and a
process that never starts Ray Train (a Tune trial, a prediction) never imports it.
"""

from __future__ import annotations

import logging
from typing import Any

# OptunaSearch's state: the study, the Optuna trial of each Tune trial id, the ids it has told.
OPTUNA_SEARCH_ATTRIBUTES = ("_ot_study", "_ot_trials", "_completed_trials")
# ASHAScheduler's settings (set by Tune's set_search_properties) and its count of stopped trials.
ASHA_ATTRIBUTES = ("_metric", "_mode", "_time_attr", "_max_t", "_num_stopped")
# Tune's storage logs every stored checkpoint at INFO under this name.
TUNE_STORAGE_LOGGER = "ray.train._internal.storage"


def optuna_study(searcher: Any):
    """The ``optuna.Study`` behind a Tune ``OptunaSearch`` (or a saved searcher's state dict)."""
    return searcher["_ot_study"] if isinstance(searcher, dict) else searcher._ot_study


def optuna_trials(searcher: Any) -> dict[str, Any]:
    """Tune trial id -> the ``optuna.Trial`` that OptunaSearch asked for it."""
    return searcher._ot_trials


def told_trials(searcher: Any) -> set[str]:
    """The Tune trial ids whose end OptunaSearch has already told its study."""
    return searcher._completed_trials


def asha_settings(scheduler: Any) -> tuple[str, str, str, int]:
    """An ASHAScheduler's (metric, mode, time attribute, max_t)."""
    return scheduler._metric, scheduler._mode, scheduler._time_attr, scheduler._max_t


def asha_unstop(scheduler: Any) -> None:
    """Take back one stop from an ASHAScheduler's count (a stop that leuktune overrode)."""
    scheduler._num_stopped -= 1


def ray_train_worker_logger() -> logging.Logger:
    """The logger Ray Train's workers report every result through (named by its file's path,
    which ``LoggingConfig`` does not reach)."""
    # Ray Train only in its own workers (see the module's docstring)
    from ray.train.v2._internal.execution import context

    return context.logger


def quiet_tune_storage() -> None:
    logging.getLogger(TUNE_STORAGE_LOGGER).setLevel(logging.WARNING)
