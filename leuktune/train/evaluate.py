"""Scoring a trained model on any split: used by the trainer each epoch and, through a
saved checkpoint, by the final test evaluation and by prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from leuktune.data.cache import CachedDataset
from leuktune.data.split import SPLITS
from leuktune.models.build import Classifier, build_model
from leuktune.train import checkpoint
from leuktune.train.device import DeviceSetup
from leuktune.train.metrics import classification_metrics, confusion_matrix


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, rows: np.ndarray, setup: DeviceSetup,
            batch_size: int, num_classes: int) -> np.ndarray:
    """Class probabilities (len(rows), num_classes) for ``images[rows]``, in the order of ``rows``."""
    model.eval()
    out = [np.zeros((0, num_classes), np.float32)]
    batches = [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]
    for host in setup.host_batches(images, batches):
        with setup.autocast():
            logits = model(setup.normalize(setup.to_unit(host)))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The trained classifier of a checkpoint, in eval mode, and the checkpoint's metadata."""
    state = checkpoint.load(path, device)
    cfg = checkpoint.experiment(state)
    # The weights come from the checkpoint: do not look for pretrained files again.
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_path": None})
    model = build_model(model_cfg, len(state["class_names"]), cfg.data.image_size)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def evaluate_checkpoint(path: str | Path, data: CachedDataset, split: str = "test",
                        device: str | torch.device | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Metrics (``<split>_*``), confusion matrix and image count of a checkpoint on one split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, state = load_model(path, device)
    if tuple(state["class_names"]) != tuple(data.class_names):
        raise checkpoint.CheckpointError(
            f"{path}: trained on classes {list(state['class_names'])}, but the data has "
            f"{list(data.class_names)}")
    if state.get("data_fingerprint") != data.fingerprint:
        # Another split could put the trial's training images in the split being scored.
        raise checkpoint.CheckpointError(
            f"{path}: trained on data with fingerprint {state.get('data_fingerprint')}, but this data's is "
            f"{data.fingerprint} (other files, labels or split); prepare the data from the trial's config")
    cfg = checkpoint.experiment(state)
    setup = DeviceSetup.create(device, state["normalization"]["mean"], state["normalization"]["std"], cfg.train)
    model = setup.prepare(model)
    rows = data.indices(split)
    probs = predict(model, ray.get(data.images), rows, setup, batch_size, data.num_classes)
    labels = data.labels[rows]
    return {**classification_metrics(labels, probs, prefix=f"{split}_"),
            f"{split}_confusion_matrix": confusion_matrix(labels, probs),
            f"{split}_images": len(rows), "epoch": state["epoch"]}
