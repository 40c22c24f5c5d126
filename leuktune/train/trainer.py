"""How a trial's workers are launched: trainer.py's one job.

Every trial runs the same per-worker loop (leuktune.train.loop). Two launchers:

- ``tune``: the loop runs inside the trial's own Tune function, which holds the worker's
  CPUs and GPU. Nothing else starts, and with ``reuse_actors`` the next trial runs in the
  same warm process (imports done, CUDA initialised, kernels tuned). Tune restarts a
  failed trial from its latest checkpoint.
- ``train``: the trial drives a Ray Train ``TorchTrainer``, whose workers train with DDP.
  Ray Train restarts a failed worker group from the latest checkpoint. Each run starts a
  controller and worker processes: seconds of fixed cost per trial.

``resources.launcher: auto`` takes ``tune`` for one worker per trial, ``train`` for more.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ray import tune
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.train.loop import run_loop
from leuktune.train.session import TuneSession

# Ray Train's controller polls its workers every 2 s by default, which adds 2-4 s to the
# end of every run and delays each report; the preemption watcher is one more process per
# run. Read in the process that calls fit() (the trial) and passed on to the controller.
_RAY_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def launcher(cfg: ExperimentConfig) -> str:
    """``tune`` or ``train`` (see the module's docstring)."""
    res = cfg.resources
    if res.launcher != "auto":
        return res.launcher
    return "tune" if res.workers_per_trial == 1 else "train"


def trial_share(cfg: ExperimentConfig) -> dict[str, float]:
    """The CPUs and GPUs a running trial holds, all its workers together, whichever the launcher."""
    res = cfg.resources
    return {"CPU": res.cpus_per_worker * res.workers_per_trial, "GPU": res.gpus_per_worker * res.workers_per_trial}


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What the Tune trial itself asks for."""
    res = cfg.resources
    if launcher(cfg) == "tune":
        return {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker}
    # The trial only drives a TorchTrainer whose workers hold the real resources. A 0.01-CPU
    # driver would leave 1.98 of 2 cores and the second trial's workers would never start;
    # Tune refuses an all-zero request, hence the token byte of memory.
    return {"cpu": 0, "memory": 1}


# Keep the best epoch's checkpoint (evaluation reads it): Ray keeps the one with the largest
# improved_epoch, and always the latest too, which a restarted trial resumes from. Ray Train's
# and Tune's CheckpointConfig are two classes that take these same settings.
CHECKPOINTS = {"num_to_keep": 1, "checkpoint_score_attribute": "improved_epoch", "checkpoint_score_order": "max"}


def trial_failures(cfg: ExperimentConfig) -> int:
    """Restarts Tune gives a failed trial: the tune launcher's; Ray Train restarts its own workers."""
    return cfg.resources.max_failures if launcher(cfg) == "tune" else 0


def tune_trainable(function, cfg: ExperimentConfig, **parameters):
    """``function`` as a Tune trainable that asks for a trial's resources, its ``parameters``
    (the data, the experiment) handed over through Ray's object store."""
    return tune.with_resources(tune.with_parameters(function, **parameters), trial_resources(cfg))


def reuse_actors(cfg: ExperimentConfig) -> bool:
    """With the tune launcher, the next trial runs in the last one's warm process: no imports,
    CUDA ready, kernels planned for its shapes."""
    return launcher(cfg) == "tune"


def tune_run_config(cfg: ExperimentConfig, folder, name: str, **settings) -> tune.RunConfig:
    """A Tune run of trials under the run folder: the checkpoints it keeps and the restarts a failed
    trial gets (both as a search's trials have them); ``settings``: more RunConfig fields."""
    return tune.RunConfig(name=name, storage_path=folder.path, storage_filesystem=folder.fs,
                          checkpoint_config=tune.CheckpointConfig(**CHECKPOINTS),
                          failure_config=tune.FailureConfig(max_failures=trial_failures(cfg)), **settings)


def run_trial(params: dict[str, Any], experiment: ExperimentConfig, data: CachedDataset, folder) -> None:
    """The Tune function of every search trial: the drawn parameters -> a concrete config -> train."""
    train(experiment.with_params(params), data, folder)


def train(cfg: ExperimentConfig, data: CachedDataset, folder) -> None:
    """Train one concrete configuration inside the current Tune trial, through its launcher."""
    launched_at = time.time()
    if launcher(cfg) == "tune":
        run_loop(cfg, data, TuneSession(use_gpu=cfg.resources.gpus_per_worker > 0), launched_at)
        return
    for key, value in _RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    # Named by the trial, so a trial that runs again (a resumed search) finds its checkpoints.
    trainer = make_trainer(cfg, data, folder, name=tune.get_context().get_trial_id(),
                           callbacks=[TuneReportCallback()], launched_at=launched_at)
    trainer.fit()


def find_checkpoint(cfg: ExperimentConfig, folder, trial_path: str, trial_id: str, epoch: int | None) -> str | None:
    """The stored checkpoint of a trial's epoch (its best), found by the epoch in its meta.json;
    as a path or URI of the run's storage. Tune's trial folder holds it for the tune launcher,
    the trial's TorchTrainer runs for the train launcher."""
    from leuktune.train import checkpoint

    if not epoch:
        return None
    root = trial_path if launcher(cfg) == "tune" else f"{folder.trials}/{trial_id}"
    for name in reversed(folder.listdir(root)):
        if name.startswith("checkpoint_") and checkpoint.epoch_of(folder.fs, f"{root}/{name}") == epoch:
            return folder.uri(f"{root}/{name}")
    return None


def make_trainer(cfg: ExperimentConfig, data: CachedDataset, folder, name: str,
                 callbacks: list | None = None, launched_at: float | None = None) -> TorchTrainer:
    """A ``TorchTrainer`` for one trial of a concrete ``cfg``, storing under the run folder's ``trials``."""
    res = cfg.resources
    resources = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    return TorchTrainer(
        _train_worker,
        train_loop_config={"experiment": cfg.to_dict(), "data": data, "launched_at": launched_at},
        scaling_config=ScalingConfig(num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name, storage_path=folder.trials, storage_filesystem=folder.fs, callbacks=callbacks or [],
            checkpoint_config=CheckpointConfig(**CHECKPOINTS),
            failure_config=FailureConfig(max_failures=res.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def _train_worker(loop_config: dict) -> None:
    """A Ray Train worker: the loop with a Ray Train session."""
    # Ray Train logs every report at INFO under a logger named by its file's path, which
    # LoggingConfig does not reach; leuktune prints its own line per epoch instead.
    from ray.train.v2._internal.execution import context

    context.logger.setLevel(logging.WARNING)
    from leuktune.train.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)
