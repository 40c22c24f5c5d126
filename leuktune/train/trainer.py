"""One trial = one Ray Train ``TorchTrainer`` run of ``train_loop_per_worker``."""

from __future__ import annotations

from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.train.loop import train_loop_per_worker


def make_trainer(cfg: ExperimentConfig, data: CachedDataset, storage_path: str, name: str,
                 callbacks: list | None = None) -> TorchTrainer:
    """``cfg`` must be concrete (every hyperparameter drawn); ``storage_path`` absolute or a URI."""
    res = cfg.resources
    resources = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        resources["GPU"] = res.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": cfg.to_dict(), "data": data},
        scaling_config=ScalingConfig(
            num_workers=res.workers_per_trial,
            use_gpu=res.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks or [],
            # Keep the best epoch's checkpoint (the final test evaluation reads it); Ray
            # also always keeps the latest, which a restarted worker group resumes from.
            checkpoint_config=CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute="improved_epoch",
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=cfg.resources.max_failures),
            # Ray Train's INFO lines repeat every metric of every report; leuktune
            # prints its own one-line progress per epoch instead.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
