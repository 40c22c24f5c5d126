"""The per-worker PyTorch loop that Ray Train runs inside every trial.

It reads a concrete ``ExperimentConfig`` and the shared ``CachedDataset``; it never
parses YAML nor decodes an image. Each epoch it trains on its shard of the training
split, scores the whole validation split and reports metrics (and, when the search
metric improves, a checkpoint) through ``ray.train.report``.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from leuktune.config import ExperimentConfig
from leuktune.data.augment import augment_batch
from leuktune.data.cache import CachedDataset
from leuktune.models.build import build_model, count_parameters, param_groups
from leuktune.train.metrics import classification_metrics


def _to_input(batch: np.ndarray, device: torch.device, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(batch).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std


def _gather(values: np.ndarray) -> np.ndarray:
    """Every worker's rows, so validation metrics cover the whole split, not one shard."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = ExperimentConfig.model_validate(loop_config["experiment"])
    data: CachedDataset = loop_config["data"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    torch.manual_seed(cfg.search.searcher.optuna.seed + rank)

    images = ray.get(data.images)  # zero-copy view of the node's shared copy
    device = ray.train.torch.get_device()
    model = build_model(cfg.model, data.num_classes, cfg.data.image_size)
    params, trainable = count_parameters(model)
    norm = {"mean": model.backbone.mean, "std": model.backbone.std}  # the backbone's pretrained config
    mean = torch.tensor(norm["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(norm["std"], device=device).view(1, 3, 1, 1)
    model_info = {"unfreeze_depth_effective": model.unfreeze_depth, "stage_groups": len(model.backbone.groups),
                  "backbone_activation": model.backbone.activation}
    optimizer = torch.optim.AdamW(param_groups(model, cfg.train.lr, cfg.train.backbone_lr_mult,
                                               cfg.train.weight_decay))
    model = ray.train.torch.prepare_model(model)

    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.train.epochs)
    train_idx, val_idx = data.indices("train"), data.indices("val")
    batch_size = cfg.train.batch_size
    rng = np.random.default_rng(cfg.search.searcher.optuna.seed)  # same order on every rank
    sign = 1 if cfg.search.mode == "max" else -1
    best = -np.inf

    for epoch in range(1, cfg.train.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = train_idx[rng.permutation(len(train_idx))]
        order = order[: len(order) // world * world][rank::world]  # equal shards keep DDP in step
        loss_sum, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start:start + batch_size])
            x = augment_batch(_to_input(images[idx], device, mean, std), cfg.train.augment)
            y = torch.from_numpy(data.labels[idx]).to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
        scheduler.step()
        train_seconds = time.perf_counter() - started

        model.eval()
        shard = val_idx[rank::world]
        probs = []
        with torch.no_grad():
            for start in range(0, len(shard), batch_size * 2):
                idx = shard[start:start + batch_size * 2]
                probs.append(torch.softmax(model(_to_input(images[idx], device, mean, std)), 1).float().cpu().numpy())
        val_probs = _gather(np.concatenate(probs) if probs else np.zeros((0, data.num_classes), np.float32))
        val_true = _gather(data.labels[shard])
        metrics = classification_metrics(val_true, val_probs, prefix="val_")
        metrics.update(
            epoch=epoch,
            train_loss=loss_sum / max(seen, 1),
            train_images_per_s=seen * world / train_seconds,
            epoch_seconds=time.perf_counter() - started,
            params=params,
            trainable_params=trainable,
            device=str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
            **model_info,
        )

        score = sign * metrics[cfg.search.metric]
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if score > best:
                best = score
                if rank == 0:
                    state = model.module.state_dict() if hasattr(model, "module") else model.state_dict()
                    torch.save({"model": state, "epoch": epoch, "class_names": data.class_names,
                                "normalization": {"mean": norm["mean"], "std": norm["std"]},
                                "experiment": cfg.to_dict()}, os.path.join(tmp, "model.pt"))
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
