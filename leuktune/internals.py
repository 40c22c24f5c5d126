"""Every use of a private name of Ray or Optuna, in one place.

leuktune reaches into two frameworks where their public API offers no way to do the job:
Ray Tune's ``OptunaSearch`` keeps its Optuna study, storage and trials in underscore attributes (the
searcher tells Optuna what ASHA saw and reopens its study from the database on a resume,
leuktune.tuning.searcher), Optuna names a trial in its database by a private id, a restored ``Tuner`` keeps the callbacks it
was pickled with (leuktune.tuning.tuner gives a resumed search its caller's), ``ASHAScheduler`` its metric,
mode, time attribute, last rung and count of stopped trials (leuktune.tuning.scheduler feeds it
a score and spares the search's starts), Ray Train logs every report through a logger that
only its private module names, Ray's private services say which local cluster ``ray start``
recorded (leuktune.runtime), and Optuna's grid sampler says it has stopped its study only in an
error's text. A new release may rename any of these;
``tests/test_structure.py`` checks that each still exists, and pyproject's upper bounds on Ray
and Optuna are the newest releases the tests have passed with.

The frameworks are imported inside the functions: importing this module costs nothing, and a
process that never starts Ray Train (a Tune trial, a prediction) never imports it.
"""

from __future__ import annotations

import logging
from typing import Any

# OptunaSearch's state: the study, the Optuna trial of each Tune trial id, the ids it has told, the storage.
OPTUNA_SEARCH_ATTRIBUTES = ("_ot_study", "_ot_trials", "_completed_trials", "_storage")
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


def optuna_search_detached(state: dict) -> dict:
    """An OptunaSearch's pickled state without its live study and storage: each Optuna trial by its id
    in the study's database (``optuna_search_attach`` binds them again)."""
    return {**state, "_ot_study": None, "_storage": None,
            "_ot_trials": {tune_id: trial._trial_id for tune_id, trial in state["_ot_trials"].items()}}


def optuna_search_attach(searcher: Any, study: Any, storage: Any) -> None:
    """Bind a detached OptunaSearch to ``study``: its Tune trials to their Optuna trials there (one
    the database does not have, asked after its last copy was kept, is left out: it is not told)."""
    import optuna  # Optuna only where a searcher is restored (see the module's docstring)

    trials = {}
    for tune_id, trial_id in searcher._ot_trials.items():
        try:
            trials[tune_id] = optuna.trial.Trial(study, trial_id)
        except KeyError:
            continue
    searcher._ot_study, searcher._storage, searcher._ot_trials = study, storage, trials


def optuna_trial_id(frozen: Any) -> int:
    """A ``FrozenTrial``'s id in its study's database (what ``optuna.trial.Trial(study, id)`` takes)."""
    return frozen._trial_id


def restored_tuner_configs(tuner: Any) -> tuple[Any, Any]:
    """A Tuner's ``TuneConfig`` and ``RunConfig`` (``Tuner.restore`` takes neither: the callbacks of a
    restored search are those pickled with it unless replaced here)."""
    return tuner._local_tuner._tune_config, tuner._local_tuner.get_run_config()


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


def ray_recorded_cluster() -> tuple[str | None, str]:
    """(the address of the local cluster that ``ray start`` recorded on this machine, or None; the
    file that records it)."""
    # Ray only when a command needs a cluster (see the module's docstring)
    from ray._common.utils import get_ray_address_file
    from ray._private.services import find_bootstrap_address

    return find_bootstrap_address(None), get_ray_address_file(None)


# What Optuna's study says when its grid sampler has run every combination and stopped it.
OPTUNA_STUDY_STOPPED = "Study.stop"


def optuna_study_stopped(err: RuntimeError) -> bool:
    """Whether ``err`` (raised by ``Study.tell``) is the grid sampler's stop, raised after the trial was recorded."""
    return OPTUNA_STUDY_STOPPED in str(err)
