"""Ray Tune over trials: Optuna proposes, ASHA stops weak trials, each trial trains through
its launcher (leuktune.training.trainer)."""

from __future__ import annotations

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune import internals, runfolder
from leuktune.runfolder import RunFolder
from leuktune.runtime import echo
from leuktune.study import StudyPlace
from leuktune.tuning.callback import LeaderboardCallback
from leuktune.tuning.scheduler import ScoredASHA
from leuktune.tuning.searcher import make_searcher
from leuktune.training import trainer


def build_tuner(cfg: ExperimentConfig, data: CachedDataset, folder: RunFolder, echo=echo,
                callbacks: tuple = (), resume: bool = False, study: StudyPlace | None = None,
                followers: list | None = None) -> tune.Tuner:
    """The search's Tuner, or with ``resume`` the interrupted one restored from the run folder
    (its searcher, scheduler and trials as they were; its study reopened where it is; this call's
    ``echo``, ``callbacks`` and ``followers``).
    ``cfg`` must have an absolute storage path (RunFolder.resolved); ``study``: where the searcher
    keeps its study (leuktune.tuning.study_setup.prepare), None: in memory; ``followers``: trackers
    (leuktune.tracking.followers)."""
    search = cfg.search
    asha = search.scheduler.asha
    # ASHA counts validated epochs (train.validate_every): each report is one.
    validations = cfg.train.validations
    scheduler = (ScoredASHA(score=asha.score, spared=cfg.starts(), time_attr="validation", max_t=validations,
                            grace_period=asha.grace_epochs(validations), reduction_factor=asha.reduction_factor)
                 if asha else FIFOScheduler())
    trainable = trainer.tune_trainable(trainer.run_trial, cfg, experiment=cfg, data=data.shared(), folder=folder)
    if resume:
        tuner = tune.Tuner.restore(folder.tune, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False, storage_filesystem=folder.fs)
        # the restored searcher (its study reopened) with this caller's echo, callbacks and followers,
        # not those pickled with the interrupted search
        tune_config, run_config = internals.restored_tuner_configs(tuner)
        run_config.callbacks = _callbacks(cfg, folder, data, echo, tune_config.search_alg, followers, callbacks)
        return tuner
    searcher = make_searcher(cfg, study)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=search.metric, mode=search.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=search.num_samples, max_concurrent_trials=trainer.concurrent_trials(cfg, echo),
            reuse_actors=trainer.reuse_actors(cfg),
        ),
        run_config=trainer.tune_run_config(
            cfg, folder, runfolder.TUNE, verbose=1,
            callbacks=_callbacks(cfg, folder, data, echo, searcher, followers, callbacks)),
    )


def _callbacks(cfg: ExperimentConfig, folder: RunFolder, data: CachedDataset, echo, searcher, followers: list | None,
               callbacks: tuple) -> list:
    """The search's Tune callbacks: its stage tables and followers, then the caller's."""
    return [LeaderboardCallback(cfg, folder, data.fingerprint, echo=echo, study_notes=searcher.note,
                                followers=followers), *callbacks]
