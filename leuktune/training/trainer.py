"""How a trial's workers are launched: trainer.py's one job.

Every trial runs the same per-worker loop (leuktune.training.loop). Two launchers:

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
import math
import os
import time
from typing import TYPE_CHECKING, Any

import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.tune.integration.ray_train import TuneReportCallback

from leuktune import internals
from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.runtime import echo
from leuktune.training import checkpoint, levers
from leuktune.training.folds import run_folds
from leuktune.training.loop import run_loop, train_loop_per_worker
from leuktune.training.session import TuneSession

if TYPE_CHECKING:  # Ray Train's torch trainer only where a trial runs one (make_trainer)
    from ray.train.torch import TorchTrainer

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


def concurrent_trials(cfg: ExperimentConfig, echo=echo, available: dict | None = None) -> int:
    """``search.max_concurrent``, with ``auto`` = as many trials as the cluster's CPUs and GPUs
    hold at the per-trial request (fractional GPUs pack: 0.25 GPU a trial = 4 per GPU), or, on
    a cluster that holds none yet, all of them (the autoscaler decides how many run).
    ``available``: the cluster's resources (default: those of the Ray this process is on)."""
    per_trial = trial_share(cfg)
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


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What the Tune trial itself asks for."""
    res = cfg.resources
    if launcher(cfg) == "tune":
        return {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker}
    # The trial only drives a TorchTrainer whose workers hold the real resources. A 0.01-CPU
    # driver would leave 1.98 of 2 cores and the second trial's workers would never start;
    # Tune refuses an all-zero request, hence the token byte of memory.
    return {"cpu": 0, "memory": 1}


# Keep the checkpoint of the epoch a trial keeps (train.keep; evaluation reads it): Ray keeps the
# ones with the largest newly_kept_epoch, and always the latest too, which a restarted trial resumes from. Two, not
# one: Tune deletes a trial's older checkpoint as it registers a newer one, before its experiment state (which
# names the latest) reaches storage; a driver killed in between left a state naming a deleted checkpoint, and
# --resume failed that trial ("does not exist on storage anymore"; seen under load in tests/test_resume.py).
# With two, a checkpoint outlives the next registration, which is when Tune forces the next save: the window
# is narrowed (no deletion at a trial's second checkpoint, where the test kills), not closed (Ray's to close).
# Ray Train's and Tune's CheckpointConfig are two classes that take these same settings.
CHECKPOINTS = {"num_to_keep": 2, "checkpoint_score_attribute": "newly_kept_epoch", "checkpoint_score_order": "max"}


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
    cfg = experiment.with_params(params)
    line = levers.drawn_line(cfg, params)
    if line:
        print(line, flush=True)
    train(cfg, data, folder)


def train(cfg: ExperimentConfig, data: CachedDataset, folder) -> None:
    """Train one concrete configuration inside the current Tune trial, through its launcher, on the
    pixels of its own data.stain_normalize (where the search draws it)."""
    launched_at = time.time()
    data = data.for_stain(cfg.data.stain_normalize)
    if launcher(cfg) == "tune":
        session = TuneSession(use_gpu=cfg.resources.gpus_per_worker > 0)
        (run_folds if cfg.search.cv else run_loop)(cfg, data, session, launched_at)
        return
    for key, value in _RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    # Named by the trial, so a trial that runs again (a resumed search) finds its checkpoints.
    trainer = make_trainer(cfg, data, folder, name=tune.get_context().get_trial_id(),
                           callbacks=[TuneReportCallback()], launched_at=launched_at)
    trainer.fit()


def find_checkpoint(cfg: ExperimentConfig, folder, trial_path: str, trial_id: str, epoch: int | None) -> str | None:
    """The stored checkpoint of a trial's epoch (its kept one), found by the epoch in its meta.json;
    as a path or URI of the run's storage. Tune's trial folder holds it for the tune launcher,
    the trial's TorchTrainer runs for the train launcher."""
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
    # only for the train launcher: every trial process imports this module, and the tune launcher's
    # would pay a tenth of a second of its start for it
    from ray.train.torch import TorchTrainer

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
    internals.ray_train_worker_logger().setLevel(logging.WARNING)
    train_loop_per_worker(loop_config)
