"""The per-worker PyTorch loop that every trial runs, whoever launched it.

It reads a concrete ``ExperimentConfig`` and the shared ``CachedDataset``; it never parses
YAML nor decodes an image. Each epoch it trains on its shard of the training split, scores
the whole validation split and reports metrics, with a checkpoint when one is due, through
its session (leuktune.train.session). A trial restarted after a failure resumes from its
latest checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from leuktune.config import ExperimentConfig
from leuktune.data.augment import augment_batch
from leuktune.data.cache import CachedDataset
from leuktune.metrics import classification_metrics, confusion_matrix
from leuktune.models.build import build_model, count_parameters
from leuktune.train import checkpoint
from leuktune.train.balance import class_weights, epoch_order
from leuktune.train.device import BatchSource, DeviceSetup
from leuktune.train.evaluate import predict
from leuktune.train.optim import make_optimizer, make_scheduler
from leuktune.train.phases import Phases
from leuktune.train.session import TrainSession, checkpoint_folder, gather, sum_over_workers


def batch_bounds(rows: int, batch_size: int) -> list[tuple[int, int]]:
    """Batches of an epoch, all of one size: a short last batch is dropped (its images come
    round again in another epoch's order), since each new input shape costs the GPU new kernel
    plans (torch.compile a recompilation), and a batch of one cannot train BatchNorm."""
    full = [(s, s + batch_size) for s in range(0, rows - batch_size + 1, batch_size)]
    return full or [(0, rows)]


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
    network: torch.nn.Module  # the classifier itself: what is checkpointed
    model: torch.nn.Module  # what trains: the network, wrapped for DDP and compiled where asked
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
            "workers": session.world_size, "device": setup.name, "precision": setup.precision}
    model = setup.prepare(model)
    worker_batch = max(1, train.batch_size // session.world_size)
    bounds = batch_bounds(len(data.indices("train")) // session.world_size, worker_batch)
    optimizer = make_optimizer(model, train)
    weights = (torch.from_numpy(class_weights(data.labels[data.indices("train")], data.num_classes))
               .to(setup.device) if train.class_balance == "weighted_loss" else None)
    source = BatchSource(images, data.labels, setup.device,
                         resident=BatchSource.fits(images, setup.device, cfg.resources.gpus_per_worker))
    return Trial(cfg, data, session, source, setup, model, model, optimizer,
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
        trial.network.load_state_dict(state["model"])
        trial.optimizer.load_state_dict(state["optimizer"])
        trial.scheduler.load_state_dict(state["scheduler"])
        trial.scaler.load_state_dict(state["scaler"])
        trial.best = Best(**state["best"])
        trial.first_epoch = state["epoch"] + 1
    trial.model = trial.session.wrap(trial.network)
    if trial.cfg.train.compile:
        trial.model = torch.compile(trial.model)


def epoch_batches(trial: Trial, epoch: int) -> list[np.ndarray]:
    """This worker's batches of rows for ``epoch``. Seeded by (seed, epoch), so every rank
    draws the same order and a resumed trial the order it would have drawn."""
    cfg, data, rank, world = trial.cfg, trial.data, trial.session.rank, trial.session.world_size
    order = epoch_order(data.indices("train"), data.labels, data.num_classes, cfg.train.class_balance,
                        cfg.train.seed, epoch)
    order = order[: trial.shard_rows * world][rank::world]
    return [np.sort(order[lo:hi]) for lo, hi in trial.bounds]  # ascending rows read memory in order


def train_epoch(trial: Trial, epoch: int) -> dict[str, float]:
    """One pass over this worker's batches: train loss and speed summed over workers."""
    train, setup, model = trial.cfg.train, trial.setup, trial.model
    torch.manual_seed(train.seed * 1_000_003 + epoch * 1_009 + trial.session.rank)  # augmentation draws
    batches = epoch_batches(trial, epoch)
    started = time.perf_counter()
    model.train()
    loss_sum = torch.zeros((), device=setup.device)
    for images, y in trial.source(batches):
        x = setup.model_input(augment_batch(setup.to_unit(images), train.augment, train.augment_strength))
        with setup.autocast():
            loss = F.cross_entropy(model(x), y, weight=trial.class_weights, label_smoothing=train.label_smoothing)
        trial.optimizer.zero_grad(set_to_none=True)
        trial.scaler.scale(loss).backward()
        if train.grad_clip:
            trial.scaler.unscale_(trial.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        trial.scaler.step(trial.optimizer)
        trial.scaler.update()
        trial.scheduler.step()
        loss_sum += loss.detach() * len(y)  # no .item(): it would stall the GPU every step
    seen = torch.tensor(sum(len(rows) for rows in batches), device=setup.device)
    loss_total, seen_total = sum_over_workers(loss_sum, seen)
    seconds = time.perf_counter() - started  # the sum above waited for the device
    return {"train_loss": loss_total / max(seen_total, 1), "train_images_per_s": seen_total / seconds,
            "lr": max(trial.scheduler.get_last_lr())}


def validate(trial: Trial) -> dict[str, Any]:
    """Metrics and confusion matrix of the whole validation split, each worker scoring a shard."""
    rank, world, data = trial.session.rank, trial.session.world_size, trial.data
    shard = data.indices("val")[rank::world]
    batch = max(1, trial.cfg.train.batch_size // world)  # the training shape: no new kernel plans
    probs = gather(predict(trial.model, trial.source, shard, trial.setup, batch, data.num_classes))
    true = gather(data.labels[shard])
    return {**classification_metrics(true, probs, prefix="val_"),
            "val_confusion_matrix": confusion_matrix(true, probs), "val_images": len(true)}


def save_and_report(trial: Trial, epoch: int, metrics: dict[str, Any]) -> bool:
    """Report the epoch, with a checkpoint when one is due; True when the trial should stop."""
    cfg = trial.cfg
    sign = 1 if cfg.search.mode == "max" else -1
    improved = trial.best.update(sign * metrics[cfg.search.metric], epoch)
    stop = bool(cfg.train.patience) and epoch - trial.best.epoch >= cfg.train.patience
    metrics = {**metrics, **trial.info, **trial.phases.metrics(), "epoch": epoch, "early_stopped": stop,
               "resumed_from_epoch": trial.first_epoch - 1,
               # Ray keeps the checkpoint with the largest value: the latest new best. Other
               # checkpoints (every N epochs, for resuming) get 0, so a tie never evicts the best.
               "improved_epoch": epoch if improved else 0}
    due = improved or stop or epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.epochs
    with checkpoint_folder() as folder:
        if due and trial.session.rank == 0:
            with trial.phases("checkpoint"):
                checkpoint.save(folder, {
                    "model": trial.network.state_dict(), "optimizer": trial.optimizer.state_dict(),
                    "scheduler": trial.scheduler.state_dict(), "scaler": trial.scaler.state_dict(),
                    "epoch": epoch, "best": {"score": trial.best.score, "epoch": trial.best.epoch},
                    "class_names": trial.data.class_names,
                    "normalization": {"mean": trial.network.backbone.mean, "std": trial.network.backbone.std},
                    "data_fingerprint": trial.data.fingerprint, "experiment": cfg.to_dict(), "metrics": metrics,
                })
        with trial.phases("report"):  # Ray copies the checkpoint to storage here
            trial.session.report(metrics, folder if due and trial.session.rank == 0 else None)
    return stop


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
        with phases("validate"):
            metrics.update(validate(trial))
        metrics["epoch_seconds"] = time.perf_counter() - started
        if save_and_report(trial, epoch, metrics):
            break


def train_loop_per_worker(loop_config: dict) -> None:
    """The entry point of a Ray Train worker (``TorchTrainer``)."""
    run_loop(ExperimentConfig.model_validate(loop_config["experiment"]), loop_config["data"], TrainSession(),
             launched_at=loop_config.get("launched_at"))
