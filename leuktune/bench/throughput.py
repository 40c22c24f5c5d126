"""Training speed: (a) a bare PyTorch loop over tensors already in memory vs (b) the same
model, batch and device trained by leuktune as a search trains a trial (one trial through
the tuner and its launcher, nothing searched).

(b) does everything a trial does per batch: reads uint8 rows of the shared cache, moves
them to the device, augments (optional here), normalises, steps the schedule, clips
gradients. Both figures are the training phase of an epoch in images/s (median over the
epochs after the first); Ray's start-up and the validation pass are outside both.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ray import tune

from leuktune.config import ExperimentConfig, ModelConfig
from leuktune.data.cache import CachedDataset
from leuktune.data.split import SPLITS
from leuktune.models.classifier import build_model
from leuktune.runfolder import RunFolder
from leuktune.runtime import ray_session
from leuktune.tuning.tuner import build_tuner
from leuktune.training.device import amp_dtype, precision_name

CLASSES = 6
VAL_IMAGES = 64  # a token validation split: the trainer needs one, the figure excludes it


class _RecordSpeed(tune.Callback):
    """Runs in the Tune driver; writes each epoch's training speed to a file."""

    def __init__(self, path: str):
        self.path = path

    def on_trial_result(self, iteration, trials, trial, result, **info):
        with open(self.path, "a") as f:
            f.write(f"{result['train_images_per_s']}\n")


def _dataset(images: int, image_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (images + VAL_IMAGES, image_size, image_size, 3), dtype=np.uint8)
    return pixels, rng.integers(0, CLASSES, len(pixels)).astype(np.int64)


def bare_loop(backbone: str, pixels: np.ndarray, labels: np.ndarray, batch: int, epochs: int,
              device: torch.device, threads: int, lr: float = 1e-3, compile: bool = False) -> list[float]:
    """The reference: float tensors on the device, a random permutation, forward/backward/step."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, head="linear"), CLASSES, pixels.shape[1]).to(device).train()
    amp = amp_dtype("auto", device)
    channels_last = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer does
    step_model = torch.compile(model) if compile else model
    x_all = (torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float().div(255) - 0.5) / 0.25
    x_all = x_all.contiguous(memory_format=channels_last)
    y_all = torch.from_numpy(labels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    speeds = []
    for _ in range(epochs):
        order = torch.randperm(len(x_all), device=device)
        started = time.perf_counter()
        for start in range(0, len(order) - 1, batch):
            idx = order[start:start + batch]
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(step_model(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        speeds.append(len(order) / (time.perf_counter() - started))
    return speeds


def leuktune_trainer(backbone: str, pixels: np.ndarray, labels: np.ndarray, batch: int, epochs: int,
                     gpus: int, threads: int, augment: bool, compile: bool, launcher: str, workdir: Path) -> list[float]:
    """One trial through the search's own path (tuner, launcher, loop), nothing searched."""
    cfg = RunFolder.resolved(ExperimentConfig.model_validate({
        "name": f"bench-throughput-{time.time_ns()}",
        "model": {"backbone": backbone, "head": "linear"},
        "data": {"image_size": pixels.shape[1]},
        "train": {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "compile": compile,
                  **({} if augment else {"augment": {"flip": False}, "augment_strength": 0.0})},
        "search": {"num_samples": 1, "scheduler": {"asha": None}},
        "resources": {"launcher": launcher, "workers_per_trial": 1, "gpus_per_worker": gpus,
                      "cpus_per_worker": threads, "max_failures": 0},
        "storage": {"path": str(workdir)},
    }))
    splits = np.full(len(pixels), SPLITS.index("train"), np.int8)
    splits[-VAL_IMAGES:] = SPLITS.index("val")
    data = CachedDataset(images=pixels, labels=labels, splits=splits,
                         class_names=tuple(f"class{i}" for i in range(CLASSES)), fingerprint="bench")
    speeds = workdir / f"speeds-{time.time_ns()}.txt"
    results = build_tuner(cfg, data, RunFolder.of(cfg), echo=lambda message: None,
                          callbacks=(_RecordSpeed(str(speeds)),)).fit()
    if results.errors:
        raise results.errors[0]
    return [float(line) for line in speeds.read_text().split()]


def bench_throughput(backbone: str, image_size: int, batch: int, images: int, epochs: int,
                     device: str, threads: int, compile: bool = False, launcher: str = "auto") -> dict:
    device_ = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                           ("cpu" if device == "auto" else device))
    pixels, labels = _dataset(images, image_size)
    train_pixels, train_labels = pixels[:-VAL_IMAGES], labels[:-VAL_IMAGES]
    bare = bare_loop(backbone, train_pixels, train_labels, batch, epochs, device_, threads, compile=compile)
    print(f"(a) bare PyTorch loop: {[round(s) for s in bare]} img/s per epoch", flush=True)
    with ray_session(num_cpus=threads, num_gpus=1 if device_.type == "cuda" else 0, logging_level="ERROR"), \
            tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for augment in (False, True):
            runs[augment] = leuktune_trainer(backbone, pixels, labels, batch, epochs, int(device_.type == "cuda"),
                                             threads, augment, compile, launcher, Path(tmp))
            print(f"(b) leuktune trainer, augmentation {'on' if augment else 'off'}: "
                  f"{[round(s) for s in runs[augment]]} img/s per epoch", flush=True)

    def steady(speeds: list[float]) -> float:
        return statistics.median(speeds[1:] or speeds)  # the first epoch pays for warm-up

    a, b_plain, b_aug = steady(bare), steady(runs[False]), steady(runs[True])
    return {
        "device": torch.cuda.get_device_name(device_) if device_.type == "cuda" else f"cpu, {threads} threads",
        "backbone": backbone, "image_size": image_size, "batch": batch, "train_images": images,
        "compile": compile, "launcher": launcher,
        "precision": precision_name(amp_dtype("auto", device_)),
        "a_bare_img_per_s": round(a, 1),
        "b_leuktune_img_per_s": round(b_plain, 1),
        "ratio_b_over_a": round(b_plain / a, 3),
        "b_leuktune_augmented_img_per_s": round(b_aug, 1),
        "ratio_augmented_over_a": round(b_aug / a, 3),
    }
