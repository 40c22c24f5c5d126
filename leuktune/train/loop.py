"""The per-worker PyTorch loop that every trial runs, whoever launched it.

It reads a concrete ``ExperimentConfig`` and the shared ``CachedDataset``; it never parses
YAML nor decodes an image. Each epoch it trains on its shard of the training split, scores
the whole validation split and reports metrics, with a checkpoint when one is due, through
its session (leuktune.train.session). A trial restarted after a failure resumes from its
latest checkpoint. A loss that turns NaN or infinite ends the trial as diverged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.metrics import METRICS
from leuktune.models.build import build_model, count_parameters
from leuktune.train import checkpoint
from leuktune.train.balance import class_weights
from leuktune.train.device import BatchSource, DeviceSetup
from leuktune.train.epoch import batch_bounds, train_epoch, validate
from leuktune.train.optim import make_optimizer, make_scheduler
from leuktune.train.phases import Phases
from leuktune.train.session import TrainSession, checkpoint_folder


@dataclass
class Best:
    """The search metric's best so far, signed so that larger is better."""

    score: float = -math.inf
    epoch: int = 0

    def update(self, score: float, epoch: int) -> bool:
        if score > self.score:  # NaN never improves
            self.score, self.epoch = score, epoch
            return True
        return False


@dataclass
class Trial:
    """What a trial's epochs share: model, optimisation state, data and where it runs."""

    cfg: ExperimentConfig
    data: CachedDataset
    session: Any
    source: BatchSource  # batches of images and labels, on the device
    setup: DeviceSetup
    network: torch.nn.Module  # the classifier itself, as the optimiser moves it
    model: torch.nn.Module  # what trains: the network, wrapped for DDP and compiled where asked
    ema: ModelEmaV3 | None  # the moving average of the network's weights, when train.ema is set
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    class_weights: torch.Tensor | None
    bounds: list[tuple[int, int]]
    info: dict[str, Any]  # facts about the model and device, reported with every epoch
    best: Best
    phases: Phases
    first_epoch: int = 1

    @property
    def scored(self) -> torch.nn.Module:
        """The weights that validation scores and checkpoints keep: the moving average if any."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def shard_rows(self) -> int:
        """Training rows per worker: equal shards keep DDP's collective calls in step."""
        return len(self.data.indices("train")) // self.session.world_size


def build(cfg: ExperimentConfig, data: CachedDataset, session, phases: Phases) -> Trial:
    """Model, optimiser, schedule and device for a trial's first epoch."""
    with phases("data"):
        images = data.pixels()  # zero-copy view of the node's shared copy
    with phases("build"):
        return _build(cfg, data, session, phases, images)


def _build(cfg: ExperimentConfig, data: CachedDataset, session, phases: Phases, images: np.ndarray) -> Trial:
    train = cfg.train
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    torch.manual_seed(train.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    model = build_model(cfg.model, data.num_classes, cfg.data.image_size)
    params, trainable = count_parameters(model)
    setup = DeviceSetup.create(session.device, model.backbone.mean, model.backbone.std, train)
    info = {"unfreeze_depth_effective": model.unfreeze_depth, "stage_groups": len(model.backbone.groups),
            "backbone_activation": model.backbone.activation, "params": params, "trainable_params": trainable,
            "workers": session.world_size, "device": setup.name, "precision": setup.precision, **session.node()}
    model = setup.prepare(model)
    # Decay warmed up from 0: short searches average over what they have, not over the init.
    ema = ModelEmaV3(model, decay=train.ema, use_warmup=True) if train.ema else None
    bounds = batch_bounds(len(data.indices("train")) // session.world_size,
                          max(1, train.batch_size // session.world_size))
    optimizer = make_optimizer(model, train)
    weights = (torch.from_numpy(class_weights(data.labels[data.indices("train")], data.num_classes))
               .to(setup.device) if train.class_balance == "weighted_loss" else None)
    source = BatchSource(images, data.labels, setup.device,
                         resident=BatchSource.fits(images, setup.device, cfg.resources.gpus_per_worker))
    return Trial(cfg, data, session, source, setup, model, model, ema, optimizer,
                 make_scheduler(optimizer, train, len(bounds)),
                 torch.amp.GradScaler(setup.device.type, enabled=setup.amp == torch.float16),
                 weights, bounds, info, Best(), phases)


def restore(trial: Trial) -> None:
    """Continue from the latest checkpoint when the trial restarts after a failure;
    then wrap the model for data-parallel training, and compile it when asked."""
    resumed = trial.session.checkpoint()
    if resumed:
        with resumed.as_directory() as folder:
            state = checkpoint.load(folder, trial.setup.device)
        # With a moving average, "model" holds the averaged weights and "network" the trained ones.
        trial.network.load_state_dict(state.get("network", state["model"]))
        if trial.ema is not None:
            trial.ema.module.load_state_dict(state["model"])
        trial.optimizer.load_state_dict(state["optimizer"])
        trial.scheduler.load_state_dict(state["scheduler"])
        trial.scaler.load_state_dict(state["scaler"])
        trial.best = Best(**state["best"])
        trial.first_epoch = state["epoch"] + 1
    trial.model = trial.session.wrap(trial.network)
    if trial.cfg.train.compile:
        trial.model = torch.compile(trial.model)


def _checkpoint_state(trial: Trial, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
    state = {
        "model": trial.scored.state_dict() if trial.ema is not None else trial.network.state_dict(),
        "optimizer": trial.optimizer.state_dict(), "scheduler": trial.scheduler.state_dict(),
        "scaler": trial.scaler.state_dict(), "epoch": epoch,
        "best": {"score": trial.best.score, "epoch": trial.best.epoch},
        "class_names": trial.data.class_names,
        "normalization": {"mean": trial.network.backbone.mean, "std": trial.network.backbone.std},
        "data_fingerprint": trial.data.fingerprint, "experiment": trial.cfg.to_dict(), "metrics": metrics,
    }
    if trial.ema is not None:
        state["network"] = trial.network.state_dict()
    return state


def save_and_report(trial: Trial, epoch: int, metrics: dict[str, Any]) -> bool:
    """Report the epoch, with a checkpoint when one is due; True when the trial should stop.

    Each report says whether the trial is ``finished`` (its last epoch, stopped by patience, or
    diverged) and its ``best_value`` so far, so a searcher can tell a trial that ended from one
    the scheduler cut short."""
    cfg = trial.cfg
    diverged = bool(metrics.get("diverged"))
    sign = 1 if cfg.search.mode == "max" else -1
    improved = not diverged and trial.best.update(sign * metrics[cfg.search.metric], epoch)
    stop = diverged or (bool(cfg.train.patience) and epoch - trial.best.epoch >= cfg.train.patience)
    metrics = {**metrics, **trial.info, **trial.phases.metrics(), "epoch": epoch,
               "early_stopped": stop and not diverged, "diverged": diverged,
               "finished": stop or epoch == cfg.train.epochs,
               "best_value": sign * trial.best.score if trial.best.epoch else math.nan,
               "best_epoch": trial.best.epoch,
               "resumed_from_epoch": trial.first_epoch - 1,
               # Ray keeps the checkpoint with the largest value: the latest new best. Other
               # checkpoints (every N epochs, for resuming) get 0, so a tie never evicts the best.
               "improved_epoch": epoch if improved else 0}
    due = not diverged and (improved or stop or epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.epochs)
    with checkpoint_folder() as folder:
        if due and trial.session.rank == 0:
            with trial.phases("checkpoint"):
                checkpoint.save(folder, _checkpoint_state(trial, epoch, metrics))
        with trial.phases("report"):  # Ray copies the checkpoint to storage here
            trial.session.report(metrics, folder if due and trial.session.rank == 0 else None)
    return stop


def _diverged(train: dict[str, float]) -> dict[str, Any]:
    """An epoch whose loss is no longer a number: nothing left to validate."""
    return {**train, **{f"val_{m}": math.nan for m in METRICS}, "diverged": True}


def run_loop(cfg: ExperimentConfig, data: CachedDataset, session, launched_at: float | None = None) -> None:
    """Build, resume if restarted, then train, validate, save and report each epoch."""
    phases = Phases(launched_at)
    trial = build(cfg, data, session, phases)
    with phases("restore"):
        restore(trial)
    for epoch in range(trial.first_epoch, cfg.train.epochs + 1):
        started = time.perf_counter()
        with phases("train"):
            metrics = train_epoch(trial, epoch)
        if math.isfinite(metrics["train_loss"]):
            with phases("validate"):
                metrics.update(validate(trial))
        if not math.isfinite(metrics["train_loss"]) or metrics.get("diverged"):
            metrics = _diverged(metrics)
        metrics["epoch_seconds"] = time.perf_counter() - started
        if save_and_report(trial, epoch, metrics):
            break


def train_loop_per_worker(loop_config: dict) -> None:
    """The entry point of a Ray Train worker (``TorchTrainer``)."""
    run_loop(ExperimentConfig.model_validate(loop_config["experiment"]), loop_config["data"], TrainSession(),
             launched_at=loop_config.get("launched_at"))
