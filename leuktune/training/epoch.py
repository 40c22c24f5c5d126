"""One epoch of a trial: its batches, the training pass, the validation pass."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from leuktune.leaderboard.ties import ValPredictions
from leuktune.metrics import confusion_matrix, scores_and_errors
from leuktune.training.balance import class_weights, epoch_order
from leuktune.training.probabilities import class_probabilities
from leuktune.training.session import average_over_workers_, gather, sum_over_workers
from leuktune.training.trial import Trial


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
    train, setup, model, state = trial.cfg.train, trial.setup, trial.wrapped, trial.state
    torch.manual_seed(train.seed * 1_000_003 + epoch * 1_009 + trial.session.rank)  # augmentation draws
    batches = epoch_batches(trial, epoch)
    started = time.perf_counter()
    model.train()
    loss_sum = torch.zeros((), device=setup.device)
    for images, y in trial.source(batches):
        x = trial.model_input(images, training=True)
        with setup.autocast():
            loss = F.cross_entropy(model(x), y, weight=trial.class_weights, label_smoothing=train.label_smoothing)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if train.grad_clip:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update(state.network, step=state.scheduler.last_epoch)
        loss_sum += loss.detach() * len(y)  # no .item(): it would stall the GPU every step
    seen = torch.tensor(sum(len(rows) for rows in batches), device=setup.device)
    loss_total, seen_total = sum_over_workers(loss_sum, seen)
    seconds = time.perf_counter() - started  # the sum above waited for the device
    return {"train_loss": loss_total / max(seen_total, 1), "train_images_per_s": seen_total / seconds,
            "lr": max(state.scheduler.get_last_lr())}


def fit_head(trial: Trial) -> dict[str, float]:
    """A probe fitted on the cached features of the training split (every cached view, each
    image weighted by ``train.class_balance``); its loss on the images as they are."""
    started = time.perf_counter()
    data, head = trial.data, trial.state.network.head
    rows = data.indices("train")
    features, labels = next(iter(trial.source([rows])))
    views = features.shape[1]
    weights = None
    if trial.cfg.train.class_balance != "none":
        weights = class_weights(data.labels[rows], data.num_classes)[labels.cpu().numpy()].repeat(views)
    head.fit(features.flatten(0, 1).float(), labels.repeat_interleave(views), sample_weight=weights)
    with torch.no_grad():
        loss = F.cross_entropy(head(features[:, 0].float()), labels).item()
    return {"train_loss": loss, "train_images_per_s": len(rows) / (time.perf_counter() - started), "lr": float("nan")}


def refresh_batchnorm(trial: Trial, epoch: int) -> None:
    """BatchNorm's running statistics of the scored model recomputed on ``train.bn_refresh``
    of this epoch's training batches (unaugmented, as validation images are), then averaged over
    workers. At a high learning rate the weights outrun the running averages, and the first
    epochs' validation scores say more about that lag than about the trial. As torch's
    ``update_bn`` (SWA) does, but only for the layers whose statistics train: a frozen stage
    keeps the statistics it came with (``Classifier.train``)."""
    count, model, setup = trial.cfg.train.bn_refresh, trial.state.scored, trial.setup
    if not count or trial.features is not None:  # a frozen backbone's statistics stay as they came
        return
    was_training = model.training
    model.train()
    live = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if live:
        momenta = {m: m.momentum for m in live}
        for m in live:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        with torch.no_grad(), setup.autocast():
            for images, _ in trial.source(epoch_batches(trial, epoch)[:count]):
                model(setup.model_input(setup.to_unit(images)))
        for m in live:
            m.momentum = momenta[m]
            average_over_workers_(m.running_mean)
            average_over_workers_(m.running_var)
    model.train(was_training)


@dataclass(frozen=True)
class Validation:
    """The whole validation split scored: every metric of METRICS by name with its bootstrap
    standard error (resampling patients where the data names them), the confusion matrix (rows =
    true class), the inference time per image, and the predictions themselves (which a checkpoint
    keeps, so that the search can compare trials image by image: leuktune.leaderboard.ties)."""

    scores: dict[str, float]
    standard_errors: dict[str, float]
    confusion_matrix: list[list[int]]
    inference_ms: float
    images: int
    predictions: ValPredictions


def validate(trial: Trial) -> Validation | None:
    """The validation split scored, each worker scoring a shard; None when the predictions are
    not numbers (the trial diverged)."""
    rank, world, data = trial.session.rank, trial.session.world_size, trial.data
    shard = data.indices("val")[rank::world]
    batch = max(1, trial.cfg.train.batch_size // world)  # the training shape: no new kernel plans
    started = time.perf_counter()
    probs = class_probabilities(trial.scored_part(trial.state.scored), trial.source, shard, trial.setup, batch,
                                data.num_classes, prepare=lambda x: trial.model_input(x, training=False))
    inference_ms = 1000 * (time.perf_counter() - started) / max(len(shard), 1)
    probs, true = gather(probs), gather(data.labels[shard])
    groups = None if data.groups is None else gather(data.groups[shard])
    if not np.isfinite(probs).all():
        return None
    rows = np.concatenate([data.indices("val")[r::world] for r in range(world)])  # as gather orders them
    scores, errors = scores_and_errors(true, probs, groups)
    return Validation(scores, errors, confusion_matrix(true, probs), inference_ms, len(true),
                      ValPredictions.of(rows, true, groups, probs))


