"""The search's study set up before its searcher opens it: reached, made (or found, to resume),
started from what earlier runs learned (``search.warm_start``), and its lost trials closed when the
search ends. All of it before any trial, so that a database that cannot be reached or an earlier run
that does not fit is one error up front. Where a study lives, and a run's study read back by a user,
are leuktune.study's.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from leuktune import internals
from leuktune.config import ConfigError, ExperimentConfig
from leuktune.runfolder import RunFolder, RunFolderError
from leuktune.runtime import echo as default_echo
from leuktune.study import StudyError, StudyPlace, load


def prepare(cfg: ExperimentConfig, folder: RunFolder, *, resume: bool,
            echo: Callable[[str], None] = default_echo) -> StudyPlace | None:
    """The run's study, ready for the searcher: a new search's is made (with the earlier runs'
    trials in it), a resumed search's must be there. A ``StudyError`` names a database that cannot be
    reached, a new search's name already taken in it, or a resumed search's study that is missing.
    None: a resumed search of an earlier release, whose study is the one Tune pickled."""
    place = StudyPlace.of(cfg, folder)
    if resume:
        place.fetch()
        if place.in_run and not place.folder.study_file.exists():
            # a search of an earlier release kept its study in Tune's pickle: it goes on with that
            echo(f"[leuktune] {folder.uri()} has no study database (an earlier release's search); the resumed search "
                 "keeps its study in memory")
            return None
        if not place.exists():
            raise StudyError(f"search.study {place.shown()}: no study {place.name!r} to resume")
        return place
    place.forget_driver_copy()
    warm = warm_trials(cfg, echo)  # the earlier runs are checked before anything is made
    storage = place.storage_object()
    if place.name in optuna.get_all_study_names(storage) and not _left_by_a_failed_start(storage, place):
        raise StudyError(f"search.study {place.shown()} already holds a study named {place.name!r}; "
                         f"--resume continues that search, or --set search.study.name=<another> starts a new one")
    study = optuna.create_study(storage=storage, study_name=place.name,
                                directions=["maximize" if d == "max" else "minimize" for d in cfg.search.directions])
    with warnings.catch_warnings():  # Optuna calls metric names experimental; the dashboard shows them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(cfg.search.objectives) or [cfg.search.metric])
    study.set_user_attr("experiment", cfg.name)
    study.set_user_attr("run", folder.uri())
    study.add_trials(warm)
    echo(f"[leuktune] study {place.name!r} in {place.shown()}"
         + (f", started with {len(warm)} trial(s) of earlier runs" if warm else ""))
    return place


def close_lost(place: StudyPlace | None) -> None:
    """After the search's trials have all ended: a trial still running in the study was asked just
    before an earlier driver stopped, and Tune never ran it. It is FAIL, marked ``lost``."""
    if place is None:
        return
    study = optuna.load_study(study_name=place.name, storage=place.storage_object())
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        optuna.trial.Trial(study, internals.optuna_trial_id(frozen)).set_user_attr(
            "lost", "asked before an earlier driver stopped; Tune never ran it")
        study.tell(frozen.number, state=TrialState.FAIL)
    place.publish()


def _left_by_a_failed_start(storage, place: StudyPlace) -> bool:
    """Whether the study of that name is this run's own, made by a start that failed before its first
    trial (a DataError, a cluster that did not answer): then it is made again."""
    study = optuna.load_study(study_name=place.name, storage=storage)
    ran = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE,
                                                                TrialState.PRUNED, TrialState.FAIL))
           if "warm_start" not in t.user_attrs]
    if study.user_attrs.get("run") != place.folder.uri() or ran:
        return False
    optuna.delete_study(study_name=place.name, storage=storage)
    return True


def warm_trials(cfg: ExperimentConfig, echo: Callable[[str], None] = default_echo) -> list:
    """The completed trials of each run of ``search.warm_start``, in this search's space: the
    parameters both search, where the earlier value lies in this search's range or choices. One
    line per run names the parameters that differ; a run whose space shares none is refused."""
    ours = cfg.searched()
    trials = []
    for at, location in enumerate(cfg.search.warm_start):
        key = f"search.warm_start[{at}] {location}"
        try:
            earlier = RunFolder.existing(location)
        except RunFolderError as err:
            raise ConfigError(f"{key}: {err}") from None
        theirs_cfg = earlier.saved_config()
        if (theirs_cfg.search.metric, theirs_cfg.search.directions) != (cfg.search.metric, cfg.search.directions):
            raise ConfigError(f"{key}: it searched {theirs_cfg.search.objectives or theirs_cfg.search.metric}, this "
                              f"search {cfg.search.objectives or cfg.search.metric}; a warm start needs the same")
        theirs = theirs_cfg.searched()
        shared = [name for name in ours if name in theirs]
        if not shared:
            raise ConfigError(f"{key}: its space ({', '.join(theirs) or 'nothing searched'}) shares no parameter with "
                              f"this search's ({', '.join(ours) or 'nothing searched'})")
        try:
            study = load(earlier)
        except StudyError as err:
            raise ConfigError(f"{key}: {err}") from None
        added = [_in_our_space(t, ours, location) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        added = [t for t in added if t is not None]
        trials += added
        differ = [f"{n} (only there)" for n in theirs if n not in ours] + \
                 [f"{n} (only here)" for n in ours if n not in theirs] + \
                 [f"{n} ({theirs[n]} there, {ours[n]} here)" for n in shared if theirs[n] != ours[n]]
        echo(f"[leuktune] warm start from {location}: {len(added)} completed trial(s); "
             + (f"parameters that differ: {'; '.join(differ)}" if differ else "the same parameters"))
    return trials


def _in_our_space(trial: Any, ours: dict, location: str):
    """An earlier run's completed trial with the parameters this space has and holds its value of;
    None when none is left."""
    params = {name: value for name, value in trial.params.items() if name in ours and ours[name].contains(value)}
    if not params:
        return None
    return optuna.trial.create_trial(
        params=params, distributions={name: ours[name].optuna() for name in params}, values=trial.values,
        intermediate_values=trial.intermediate_values,
        user_attrs={"warm_start": location, "warm_start_trial_id": trial.user_attrs.get("trial_id"),
                    "warm_start_number": trial.number})
