"""Ray Tune over trials: Optuna proposes, ASHA stops weak trials, each trial trains through
its launcher (leuktune.train.trainer)."""

from __future__ import annotations

import math

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.runfolder import RunFolder
from leuktune.runtime import echo
from leuktune.search.callback import LeaderboardCallback
from leuktune.search.searcher import make_searcher
from leuktune.train import trainer


def concurrent_trials(cfg: ExperimentConfig, echo=echo, available: dict | None = None) -> int:
    """``search.max_concurrent``, with ``auto`` = as many trials as the cluster's CPUs and GPUs
    hold at the per-trial request (fractional GPUs pack: 0.25 GPU a trial = 4 per GPU), or, on
    a cluster that holds none yet, all of them (the autoscaler decides how many run).
    ``available``: the cluster's resources (default: those of the Ray this process is on)."""
    per_trial = trainer.trial_share(cfg)
    available = ray.cluster_resources() if available is None else available
    fits = {kind: math.floor(available.get(kind, 0) / need + 1e-6) for kind, need in per_trial.items() if need > 0}
    short = [f"{per_trial[kind]:g} {kind} a trial, the cluster has {available.get(kind, 0):g}"
             for kind, n in fits.items() if n == 0]
    if short:  # an autoscaling cluster may add nodes; a fixed one never will
        echo(f"[leuktune] WARNING: no trial fits the cluster as it is ({'; '.join(short)}): trials wait until "
             "nodes with these resources join (see resources.* in the experiment)")
    wanted = cfg.search.max_concurrent
    if wanted != "auto":
        return wanted
    # With no room yet (an autoscaling cluster scaled to zero), every trial is asked for at once,
    # so the autoscaler sees the whole demand and adds the nodes it allows.
    return cfg.search.num_samples if short else max(1, min([cfg.search.num_samples, *fits.values()]))


def build_tuner(cfg: ExperimentConfig, data: CachedDataset, folder: RunFolder, echo=echo,
                callbacks: tuple = (), resume: bool = False) -> tune.Tuner:
    """The search's Tuner, or with ``resume`` the interrupted one restored from the run folder
    (its searcher, scheduler, callbacks and trials as they were). ``cfg`` must have an
    absolute storage path (RunFolder.resolved)."""
    search = cfg.search
    asha = search.scheduler.asha
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs,
                               grace_period=asha.grace_epochs(cfg.train.epochs),
                               reduction_factor=asha.reduction_factor)
                 if asha else FIFOScheduler())
    trainable = trainer.tune_trainable(trainer.run_trial, cfg, experiment=cfg, data=data.shared(), folder=folder)
    if resume:
        return tune.Tuner.restore(folder.file("tune"), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False, storage_filesystem=folder.fs)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=search.metric, mode=search.mode, search_alg=make_searcher(cfg), scheduler=scheduler,
            num_samples=search.num_samples, max_concurrent_trials=concurrent_trials(cfg, echo),
            reuse_actors=trainer.reuse_actors(cfg),
        ),
        run_config=trainer.tune_run_config(
            cfg, folder, "tune", verbose=1,
            callbacks=[LeaderboardCallback(cfg, folder, data.fingerprint, echo=echo), *callbacks]),
    )
