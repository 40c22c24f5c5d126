"""The per-worker PyTorch loop that Ray Train runs inside every trial.

It reads a concrete ``ExperimentConfig`` and the shared ``CachedDataset``; it never
parses YAML nor decodes an image. Each epoch it trains on its shard of the training
split, scores the whole validation split and reports metrics, with a checkpoint when
one is due, through ``ray.train.report``. A worker group restarted by Ray Train after
a failure resumes from the trial's latest checkpoint.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from leuktune.config import ExperimentConfig, TrainConfig
from leuktune.data.augment import augment_batch
from leuktune.data.cache import CachedDataset
from leuktune.models.build import build_model, count_parameters
from leuktune.train import checkpoint
from leuktune.train.balance import class_weights, epoch_order
from leuktune.train.device import DeviceSetup
from leuktune.train.evaluate import predict
from leuktune.train.metrics import classification_metrics, confusion_matrix
from leuktune.train.optim import make_optimizer, make_scheduler


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(values: np.ndarray) -> np.ndarray:
    """Every worker's rows, so validation metrics cover the whole split, not one shard."""
    if not _distributed():
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def _sum_over_workers(*values: torch.Tensor) -> list[float]:
    total = torch.stack([v.float() for v in values])
    if _distributed():
        dist.all_reduce(total)
    return total.tolist()


def batch_bounds(rows: int, batch_size: int) -> list[tuple[int, int]]:
    """Batches of an epoch; a last batch of one image is dropped (BatchNorm cannot train on it)."""
    bounds = [(s, min(s + batch_size, rows)) for s in range(0, rows, batch_size)]
    return [b for b in bounds if b[1] - b[0] > 1 or len(bounds) == 1]


@dataclass
class _Best:
    """The search metric's best so far, signed so that larger is better."""

    score: float = -math.inf
    epoch: int = 0

    def update(self, score: float, epoch: int) -> bool:
        if score > self.score:  # NaN never improves
            self.score, self.epoch = score, epoch
            return True
        return False


@dataclass(frozen=True)
class _Step:
    """What one optimisation step needs besides the model and the batch."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    class_weights: torch.Tensor | None
    train: TrainConfig


def _train_epoch(model: torch.nn.Module, step: _Step, setup: DeviceSetup, images: np.ndarray,
                 labels: np.ndarray, batches: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over this worker's batches; returns the summed loss and the image count, on the device."""
    model.train()
    train = step.train
    loss_sum = torch.zeros((), device=setup.device)
    seen = 0
    for rows, host in zip(batches, setup.host_batches(images, batches)):
        x = setup.normalize(augment_batch(setup.to_unit(host), train.augment, train.augment_strength))
        y = torch.from_numpy(labels[rows]).to(setup.device, non_blocking=True)
        with setup.autocast():
            loss = F.cross_entropy(model(x), y, weight=step.class_weights, label_smoothing=train.label_smoothing)
        step.optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(loss).backward()
        if train.grad_clip:
            step.scaler.unscale_(step.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.scheduler.step()
        loss_sum += loss.detach() * len(rows)  # no .item(): it would stall the GPU every step
        seen += len(rows)
    return loss_sum, torch.tensor(seen, device=setup.device)


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["experiment"])
    data: CachedDataset = loop_config["data"]
    train = cfg.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    seed = cfg.search.searcher.optuna.seed
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts them)

    images = ray.get(data.images)  # zero-copy view of the node's shared copy
    model = build_model(cfg.model, data.num_classes, cfg.data.image_size)
    params, trainable = count_parameters(model)
    normalization = {"mean": model.backbone.mean, "std": model.backbone.std}
    setup = DeviceSetup.create(ray.train.torch.get_device(), normalization["mean"], normalization["std"], train)
    device = setup.device
    model_info = {"unfreeze_depth_effective": model.unfreeze_depth, "stage_groups": len(model.backbone.groups),
                  "backbone_activation": model.backbone.activation, "params": params,
                  "trainable_params": trainable, "workers": world,
                  "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  "precision": setup.precision}
    model = setup.prepare(model)

    train_idx, val_idx = data.indices("train"), data.indices("val")
    worker_batch = max(1, train.batch_size // world)
    shard_rows = len(train_idx) // world  # equal shards keep DDP's collective calls in step
    bounds = batch_bounds(shard_rows, worker_batch)
    optimizer = make_optimizer(model, train)
    scheduler = make_scheduler(optimizer, train, len(bounds))
    scaler = torch.amp.GradScaler(device.type, enabled=setup.amp == torch.float16)
    weights = (torch.from_numpy(class_weights(data.labels[train_idx], data.num_classes)).to(device)
               if train.class_balance == "weighted_loss" else None)
    best = _Best()
    sign = 1 if cfg.search.mode == "max" else -1

    first_epoch = 1
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as folder:
            state = checkpoint.load(folder, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        best = _Best(**state["best"])
        first_epoch = state["epoch"] + 1
    model = ray.train.torch.prepare_model(model, move_to_device=False)
    bare = model.module if hasattr(model, "module") else model
    step = _Step(optimizer, scheduler, scaler, weights, train)

    for epoch in range(first_epoch, train.epochs + 1):
        # Seeded per epoch and rank, so a resumed trial draws what it would have drawn.
        torch.manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)
        order = epoch_order(train_idx, data.labels, data.num_classes, train.class_balance, seed, epoch)
        order = order[: shard_rows * world][rank::world]
        started = time.perf_counter()
        # ascending rows read the shared array in memory order
        batches = [np.sort(order[lo:hi]) for lo, hi in bounds]
        loss_sum, seen = _train_epoch(model, step, setup, images, data.labels, batches)
        loss_total, seen_total = _sum_over_workers(loss_sum, seen)
        train_seconds = time.perf_counter() - started  # the sum above waited for the device

        shard = val_idx[rank::world]
        val_probs = _gather(predict(model, images, shard, setup, worker_batch * 2, data.num_classes))
        val_true = _gather(data.labels[shard])
        metrics = classification_metrics(val_true, val_probs, prefix="val_")
        improved = best.update(sign * metrics[cfg.search.metric], epoch)
        stop = bool(train.patience) and epoch - best.epoch >= train.patience
        metrics.update(
            model_info,
            epoch=epoch,
            val_confusion_matrix=confusion_matrix(val_true, val_probs),
            val_images=len(val_true),
            train_loss=loss_total / max(seen_total, 1),
            train_images_per_s=seen_total / train_seconds,
            epoch_seconds=time.perf_counter() - started,
            lr=max(scheduler.get_last_lr()),
            # Ray keeps the checkpoint with the largest value: the latest new best. Other
            # checkpoints (every N epochs, for resuming) get 0, so a tie never evicts the best.
            improved_epoch=epoch if improved else 0,
            early_stopped=stop,
            resumed_from_epoch=first_epoch - 1,
        )
        due = improved or stop or epoch % train.checkpoint_every == 0 or epoch == train.epochs
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if due and rank == 0:
                checkpoint.save(folder, {
                    "model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "epoch": epoch, "best": {"score": best.score, "epoch": best.epoch},
                    "class_names": data.class_names, "normalization": normalization,
                    "data_fingerprint": data.fingerprint,
                    "experiment": cfg.to_dict(), "metrics": metrics,
                })
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=saved)
        if stop:
            break
