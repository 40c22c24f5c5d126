"""Optuna behind Ray Tune, told what the scheduler saw.

Ray Tune's OptunaSearch reports a trial that ASHA stopped at epoch 3 as COMPLETE with its
epoch-3 score, as if that were its final score. Here every epoch's value reaches Optuna as an
intermediate value; a trial the scheduler stopped is PRUNED (Optuna's samplers rank those as
they rank trials its own pruners stopped); a trial that diverged or failed is FAIL; a trial
that finished is COMPLETE with the value of the epoch it keeps (train.keep: its best, or its last).

The study is kept in a database (leuktune.study): each trial there also has its Tune trial id,
its node and its kept checkpoint as user attributes. Tune saves this searcher by pickling it;
the live study is left out and opened again where the run's study is when the search resumes,
so that the study, not a pickled copy of it, is what the resumed search goes on with.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from leuktune import internals
from leuktune.config import CONDITIONS, ConfigError, ExperimentConfig
from leuktune.results import EpochReport
from leuktune.study import StudyError, StudyPlace
from leuktune.tuning.optuna_space import DefineByRun


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class LeuktuneSearch(OptunaSearch):
    def __init__(self, cfg: ExperimentConfig, sampler: optuna.samplers.BaseSampler, place: StudyPlace | None = None):
        search = cfg.search
        multi = bool(search.objectives)
        self._place = place  # None: a study in memory (the benchmarks' searches, the searcher's own tests)
        self._noted: dict[str, dict[str, Any]] = {}  # user attributes already set, by Tune trial id
        self._reported: dict[str, int] = {}  # the last epoch whose value the study has, by Tune trial id
        # The default recipe and search.start_from run first (Optuna's enqueue_trial); the
        # sampler learns from them like from any trial.
        super().__init__(space=DefineByRun(cfg), metric=list(search.objectives) if multi else search.metric,
                         mode=search.directions if multi else search.mode, sampler=sampler,
                         points_to_evaluate=cfg.starts() or None,
                         storage=place.storage_object() if place else None, study_name=place.name if place else None)

    # -- the study in its database, not in Tune's pickle

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if state.get("_place") is not None:
            state = internals.optuna_search_detached(state)
        return state

    def __setstate__(self, state: dict) -> None:
        # an earlier release's searcher has neither: its study is the one pickled in its state
        self.__dict__.update({"_place": None, "_noted": {}, "_reported": {}, **state})
        if self._place is not None:
            self._reopen()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))

    def _reopen(self) -> None:
        """Bind the Tune trials to the study where it is now. The study may be ahead of this state
        (Tune saves its searcher every so often, its trials more often): a trial the study ended
        since counts as told (its first end is the one kept); a trial asked since is found by its
        ``trial_id`` attribute (Tune goes on with it if it recorded it; if not, the search's end
        marks it lost, ``study_setup.close_lost``)."""
        place = self._place
        if place.in_run and not place.folder.study_file.exists():  # SQLite would make an empty file there
            raise StudyError(f"{place.folder.uri()}: the search's study is not at {place.folder.study_file}; a search "
                             "resumes where it was started (a run folder moved since cannot be resumed)")
        storage = place.storage_object(create=False)
        study = optuna.load_study(study_name=place.name, storage=storage, sampler=self._sampler)
        internals.optuna_search_attach(self, study, storage)
        trials, told = internals.optuna_trials(self), internals.told_trials(self)
        for frozen in study.get_trials(deepcopy=False):
            tune_id = frozen.user_attrs.get("trial_id")
            if tune_id and tune_id not in trials and frozen.state == TrialState.RUNNING:
                trials[tune_id] = optuna.trial.Trial(study, internals.optuna_trial_id(frozen))
        ended = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        told.update(tune_id for tune_id, trial in trials.items() if trial.number in ended)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        self.note(trial_id, trial_id=trial_id)
        if self._place is not None:
            self._place.publish()
        return config

    def note(self, trial_id: str, /, **attributes: Any) -> None:
        """Set user attributes of a running trial in the study (its Tune id, node, kept checkpoint);
        a trial the study has ended, or another session's, is left as it is."""
        trials = internals.optuna_trials(self)
        if trial_id not in trials or trial_id in internals.told_trials(self):
            return
        noted = self._noted.setdefault(trial_id, {})
        for key, value in attributes.items():
            if value is not None and noted.get(key) != value:
                trials[trial_id].set_user_attr(key, value)
                noted[key] = value

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Trials of another searcher's session (a resumed search's restarted ones) are not ours to tell.
        trials = internals.optuna_trials(self)
        if isinstance(self.metric, list) or trial_id in internals.told_trials(self) or trial_id not in trials:
            return
        report = EpochReport.from_result(result)
        value = report.value(self.metric)
        # the epoch, not Tune's report count, which restarts would skew; once (Tune repeats a trial's
        # last result when its function returns)
        if _finite(value) and report.epoch > self._reported.get(trial_id, 0):
            trials[trial_id].report(value, report.epoch)
            self._reported[trial_id] = report.epoch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trials, told = internals.optuna_trials(self), internals.told_trials(self)
        if trial_id in told or trial_id not in trials:
            return
        report = EpochReport.from_result(result) if result and "epoch" in result else None
        values = None
        if report is not None and not error:
            # The result that ended it (its last epoch, or the one the scheduler stopped it at) never
            # reached on_trial_result: Tune tells a searcher only of the results a trial goes on after.
            self.on_trial_result(trial_id, result)
        if error or report is None or report.diverged:
            state = TrialState.FAIL
        elif not report.finished:
            state = TrialState.PRUNED
        else:
            state, values = TrialState.COMPLETE, self._final_values(report)
            if values is None:
                state = TrialState.FAIL
        told.add(trial_id)
        try:
            internals.optuna_study(self).tell(trials[trial_id], values, state=state)
        except RuntimeError as err:
            # Optuna's grid sampler stops its study once every combination has run, and says so by
            # raising outside an optimize loop, after the trial is recorded: nothing is lost.
            if not internals.optuna_study_stopped(err):
                raise
        self._noted.pop(trial_id, None)
        self._reported.pop(trial_id, None)
        if self._place is not None:
            self._place.publish()

    def _final_values(self, report: EpochReport) -> Any:
        """The kept epoch's value of the search metric (train.keep); with more objectives, the costs after it."""
        kept = report.kept_value
        if not isinstance(self.metric, list):
            return kept if _finite(kept) else None
        values = [kept, *(report.value(name) for name in self.metric[1:])]
        return values if all(_finite(v) for v in values) else None


def grid(cfg: ExperimentConfig) -> dict[str, list]:
    """Every searched parameter's values, for a grid search; a ConfigError for what a grid cannot run."""
    space = {}
    for name, dist in cfg.searched().items():
        values = dist.grid_values()
        if values is None:
            raise ConfigError(f"search.searcher.optuna.sampler grid: {name} is a {dist.kind} range; a grid needs "
                              f"{{choice: [...]}} or {{int: [lo, hi]}} (or use sampler tpe or random)")
        if name in CONDITIONS and len(values) > 1:
            raise ConfigError(f"search.searcher.optuna.sampler grid: {name} applies only when {CONDITIONS[name]}; "
                              "a grid would repeat every other combination for each of its values; give it one "
                              "value, or search it with tpe or random")
        space[name] = values
    return space


def with_grid_size(cfg: ExperimentConfig) -> ExperimentConfig:
    """A grid search runs every combination once: ``num_samples`` is the grid's size (an
    explicit other number is a mistake worth saying). Other searchers: ``cfg`` as it is."""
    if cfg.search.searcher.optuna.sampler != "grid":
        return cfg
    size = math.prod(len(values) for values in grid(cfg).values())
    if "num_samples" in cfg.search.model_fields_set and cfg.search.num_samples != size:
        raise ConfigError(f"search.num_samples is {cfg.search.num_samples}, but the grid has {size} combinations; "
                          f"set it to {size} or leave it out")
    return cfg.model_copy(update={"search": cfg.search.model_copy(update={"num_samples": size})})


def make_searcher(cfg: ExperimentConfig, place: StudyPlace | None = None) -> LeuktuneSearch:
    """The search's searcher, its study at ``place`` (made by leuktune.tuning.study_setup.prepare), or in memory."""
    settings = cfg.search.searcher.optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # leuktune prints its own line per trial
    # multivariate, group and constant_liar are chosen on purpose; Optuna calls them experimental.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    startup = settings.startup(cfg.search.num_samples)
    if settings.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=settings.multivariate,
                                             group=settings.group and settings.multivariate,
                                             constant_liar=settings.constant_liar, n_startup_trials=startup)
    elif settings.sampler == "gp":
        # Conditional fields (an MLP's width) fall outside GP's joint space and are drawn at
        # random, which it would otherwise warn of in every trial.
        sampler = optuna.samplers.GPSampler(seed=settings.seed, n_startup_trials=startup,
                                            warn_independent_sampling=False)
    elif settings.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=settings.seed)
    else:
        sampler = optuna.samplers.GridSampler(grid(cfg), seed=settings.seed)
    return LeuktuneSearch(cfg, sampler, place)
