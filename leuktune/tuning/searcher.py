"""Optuna behind Ray Tune, told what the scheduler saw.

Ray Tune's OptunaSearch reports a trial that ASHA stopped at epoch 3 as COMPLETE with its
epoch-3 score, as if that were its final score. Here every epoch's value reaches Optuna as an
intermediate value; a trial the scheduler stopped is PRUNED (Optuna's samplers rank those as
they rank trials its own pruners stopped); a trial that diverged or failed is FAIL; a trial
that finished is COMPLETE with the value of the epoch it keeps (train.keep: its best, or its last).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from leuktune import internals
from leuktune.config import CONDITIONS, ConfigError, ExperimentConfig
from leuktune.results import EpochReport
from leuktune.tuning.optuna_space import DefineByRun


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class LeuktuneSearch(OptunaSearch):
    def __init__(self, cfg: ExperimentConfig, sampler: optuna.samplers.BaseSampler):
        search = cfg.search
        multi = bool(search.objectives)
        # The default recipe and search.start_from run first (Optuna's enqueue_trial); the
        # sampler learns from them like from any trial.
        super().__init__(space=DefineByRun(cfg), metric=list(search.objectives) if multi else search.metric,
                         mode=search.directions if multi else search.mode, sampler=sampler,
                         points_to_evaluate=cfg.starts() or None)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Trials of another searcher's session (a resumed search's restarted ones) are not ours to tell.
        trials = internals.optuna_trials(self)
        if isinstance(self.metric, list) or trial_id in internals.told_trials(self) or trial_id not in trials:
            return
        report = EpochReport.from_result(result)
        value = report.value(self.metric)
        if _finite(value):  # the epoch, not Tune's report count, which restarts would skew
            trials[trial_id].report(value, report.epoch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trials, told = internals.optuna_trials(self), internals.told_trials(self)
        if trial_id in told or trial_id not in trials:
            return
        report = EpochReport.from_result(result) if result and "epoch" in result else None
        values = None
        if error or report is None or report.diverged:
            state = TrialState.FAIL
        elif not report.finished:
            # The scheduler stopped it; the result that made it do so never reached on_trial_result.
            self.on_trial_result(trial_id, result)
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

    def _final_values(self, report: EpochReport) -> Any:
        """The kept epoch's value of the search metric (train.keep); with more objectives, the costs after it."""
        best = report.best_value
        if not isinstance(self.metric, list):
            return best if _finite(best) else None
        values = [best, *(report.value(name) for name in self.metric[1:])]
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


def make_searcher(cfg: ExperimentConfig) -> LeuktuneSearch:
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
    return LeuktuneSearch(cfg, sampler)
