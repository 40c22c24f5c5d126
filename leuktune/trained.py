"""A trained model, as a researcher holds it after a search: ``leuktune.load_model``.

It is read from a trial's checkpoint, which carries everything needed to use it: the
weights, the class names, the input normalisation, the trial's configuration and the
fingerprint of the data split it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.metrics import classification_metrics, confusion_matrix
from leuktune.models.build import Classifier, build_model
from leuktune.train import checkpoint
from leuktune.train.device import BatchSource, DeviceSetup
from leuktune.train.evaluate import predict


class TrainedModel:
    """A trial's trained classifier with what it was trained on.

    ``module`` is the ``torch.nn.Module`` (in eval mode on ``device``); ``classes`` the
    class names in output order; ``config`` the trial's concrete ``ExperimentConfig``.
    """

    def __init__(self, module: Classifier, state: dict[str, Any], device: torch.device, path: Path):
        self.module = module
        self.device = device
        self.path = path
        self.classes: tuple[str, ...] = tuple(state["class_names"])
        self.config: ExperimentConfig = checkpoint.experiment(state)
        self.epoch: int = state["epoch"]
        self.normalization: dict[str, tuple] = state["normalization"]
        self.data_fingerprint: str | None = state.get("data_fingerprint")

    def __repr__(self) -> str:
        return (f"TrainedModel({self.config.model.backbone} + {self.config.model.head} head, "
                f"classes={list(self.classes)}, epoch {self.epoch}, from {self.path})")

    def evaluate(self, split: str = "test", data: CachedDataset | None = None,
                 batch_size: int = 64) -> dict[str, Any]:
        """Metrics (``<split>_*``), confusion matrix and image count on one split of the data the
        model was trained on. ``data`` defaults to the run's own, prepared again from the
        trial's configuration (decoded images come from the cache).

        >>> model = leuktune.load_model(board.iloc[0])  # doctest: +SKIP
        >>> model.evaluate("test")["test_balanced_accuracy"]  # doctest: +SKIP
        0.98
        """
        if data is None:
            data = self._prepare_data()
        self._check_same_data(data)
        rows = data.indices(split)
        setup = DeviceSetup.create(self.device, self.normalization["mean"], self.normalization["std"],
                                   self.config.train)
        source = BatchSource(data.pixels(), data.labels, self.device)
        probs = predict(setup.prepare(self.module), source, rows, setup, batch_size, data.num_classes)
        labels = data.labels[rows]
        return {**classification_metrics(labels, probs, prefix=f"{split}_"),
                f"{split}_confusion_matrix": confusion_matrix(labels, probs),
                f"{split}_images": len(rows), "epoch": self.epoch}

    def _prepare_data(self) -> CachedDataset:
        from leuktune.data.prepare import prepare

        data, _ = prepare(self.config, progress=lambda message: None)
        return data

    def _check_same_data(self, data: CachedDataset) -> None:
        if tuple(data.class_names) != self.classes:
            raise checkpoint.CheckpointError(
                f"{self.path}: trained on classes {list(self.classes)}, but the data has {list(data.class_names)}")
        if self.data_fingerprint != data.fingerprint:
            # Another split could put the trial's training images in the split being scored.
            raise checkpoint.CheckpointError(
                f"{self.path}: trained on data with fingerprint {self.data_fingerprint}, but this data's is "
                f"{data.fingerprint} (other files, labels or split); prepare the data from the trial's config")


def load_model(checkpoint_path, device: str | torch.device | None = None) -> TrainedModel:
    """The trained model of a checkpoint: a folder (a leaderboard's ``checkpoint_uri``), the
    ``checkpoint.pt`` in it, or a leaderboard row.

    >>> board = leuktune.load_leaderboard("runs/synthetic-default")  # doctest: +SKIP
    >>> model = leuktune.load_model(board.iloc[0])  # doctest: +SKIP
    """
    if hasattr(checkpoint_path, "get") and not isinstance(checkpoint_path, (str, Path)):
        row = checkpoint_path
        checkpoint_path = row.get("checkpoint_uri")
        if checkpoint_path is None or checkpoint_path != checkpoint_path:
            raise checkpoint.CheckpointError(
                f"trial {row.get('trial_id')} has no checkpoint (status {row.get('status')!r})")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = checkpoint.load(checkpoint_path, device)
    cfg = checkpoint.experiment(state)
    # The weights come from the checkpoint: do not look for pretrained files again.
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_path": None})
    module = build_model(model_cfg, len(state["class_names"]), cfg.data.image_size)
    module.load_state_dict(state["model"])
    folder = Path(checkpoint_path)
    return TrainedModel(module.to(device).eval(), state, device, folder.parent if folder.is_file() else folder)
