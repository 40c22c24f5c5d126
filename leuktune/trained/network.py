"""A trial's trained network with what it was trained on: the leaf of every trained model.

It is read from a trial's checkpoint, which carries everything needed to use it: the weights, the
class names, the input normalisation, the trial's configuration and the fingerprint of the data
split it was trained on. A checkpoint is never written after its trial: the temperature that
calibrates its probabilities is the final evaluation's (``test.parquet`` of the run that holds the
checkpoint), and the data it is scored on is that run's, read back where the run is now.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from leuktune.config import ExperimentConfig
from leuktune.models.classifier import Classifier, build_model
from leuktune.runfolder import RunFolder
from leuktune.trained.base import Trained
from leuktune.training import checkpoint
from leuktune.training.device import BatchSource, DeviceSetup
from leuktune.training.probabilities import class_probabilities

if TYPE_CHECKING:  # the data layer imports Ray: loading a model to predict does not need it
    from leuktune.data.cache import CachedDataset


class TrainedModel(Trained):
    """A trial's trained classifier with what it was trained on.

    ``module`` is the ``torch.nn.Module`` (in eval mode on ``device``); ``classes`` the
    class names in output order; ``config`` the trial's concrete ``ExperimentConfig``;
    ``temperature`` divides its logits (1.0 until the final evaluation fits it on the
    validation split); ``run`` is the run folder that holds the checkpoint (None for a checkpoint
    kept alone: ``evaluate`` then needs ``data``).
    """

    def __init__(self, module: Classifier, state: dict[str, Any], config: ExperimentConfig, device: torch.device,
                 location: str, *, run: RunFolder | None = None, temperature: float = 1.0):
        self.module = module
        self.device = device
        self.location = location  # the checkpoint folder, a local path or a URI
        self.run = run
        self.classes: tuple[str, ...] = tuple(state["class_names"])
        self.config = config
        self.epoch: int = state["epoch"]
        self.normalization: dict[str, tuple] = state["normalization"]
        self.data_fingerprint: str | None = state.get("data_fingerprint")
        # the pixels data.stain_normalize was fitted to (a checkpoint written before they were kept
        # has none: the config's file is read instead)
        reference = state.get("stain_reference")
        self.stain_reference: np.ndarray | None = None if reference is None else reference.cpu().numpy()
        self.temperature = temperature

    def __repr__(self) -> str:
        return (f"TrainedModel({self.config.model.backbone} + {self.config.model.head} head, "
                f"classes={list(self.classes)}, epoch {self.epoch}, from {self.location})")

    def describe(self) -> dict[str, Any]:
        return {"kind": "network", "location": self.location, "temperature": self.temperature,
                "backbone": self.config.model.backbone, "head": self.config.model.head, "epoch": self.epoch}

    @property
    def setup(self) -> DeviceSetup:
        return DeviceSetup.create(self.device, self.normalization["mean"], self.normalization["std"],
                                  self.config.train)

    def probabilities(self, images: np.ndarray, *, rows: np.ndarray | None = None, tta: bool = False,
                      batch_size: int = 64) -> np.ndarray:
        setup = self.setup
        rows = np.arange(len(images)) if rows is None else rows
        source = BatchSource(images, np.zeros(len(images), np.int64), self.device)
        return class_probabilities(setup.prepare(self.module), source, rows, setup, batch_size, len(self.classes),
                                   tta=tta)

    def split_probabilities(self, data: CachedDataset, split: str, *, tta: bool = False) -> np.ndarray:
        self.check_same_data(data)
        data = data.for_stain(self.config.data.stain_normalize)  # the pixels of the method it was trained on
        return self.probabilities(data.pixels(), rows=data.indices(split), tta=tta)

    @functools.cached_property
    def stain_normalizer(self):
        """The trial's ``data.stain_normalize`` (fitted to its reference image, as the checkpoint
        keeps it), or None."""
        # the data layer imports Ray: predicting from files does not need it
        from leuktune.data.stain import StainNormalizer, from_config

        data = self.config.data
        if data.stain_normalize == "off" or self.stain_reference is None:
            return from_config(data)
        return StainNormalizer(data.stain_normalize, self.stain_reference,
                               f"{data.stain_reference} (as kept in {self.location})")

    def load_images(self, images: Any) -> tuple[np.ndarray, pd.DataFrame]:
        """Images (file paths, PIL images or arrays (H, W, 3); one or a list) decoded and resized as
        in training: the uint8 pixels of those that could be read, and a row per input (``input``,
        ``error`` naming what went wrong with the others)."""
        # the data layer imports Ray: predicting from files does not need it
        from leuktune.data.decode import BadImage, load_rgb, resize, to_rgb

        items = list(images) if isinstance(images, (list, tuple)) else [images]
        size, mode = self.config.data.image_size, self.config.data.resize
        normalize = self.stain_normalizer
        pixels, rows = [], []
        for i, item in enumerate(items):
            name = str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} {i}>"
            try:
                if isinstance(item, (str, Path)):
                    img = load_rgb(str(item))
                elif isinstance(item, Image.Image):
                    img = to_rgb(item)
                else:
                    img = Image.fromarray(_as_uint8(np.asarray(item))).convert("RGB")
                pixels.append(normalize(resize(img, size, mode)) if normalize else resize(img, size, mode))
                rows.append({"input": name, "error": None})
            except (BadImage, OSError, ValueError, TypeError) as err:
                rows.append({"input": name, "error": f"{type(err).__name__}: {err}"})
        stacked = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
        return stacked, pd.DataFrame(rows, columns=["input", "error"])

    def model_input(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) pixels -> the float (N, 3, H, W) tensor the network takes."""
        setup = self.setup
        with torch.no_grad():
            return setup.model_input(setup.to_unit(torch.from_numpy(pixels))).contiguous()

    def data(self) -> CachedDataset:
        # the data layer imports Ray: predicting from files does not need it
        from leuktune.data.prepare import prepare

        if self.run is None:
            raise checkpoint.CheckpointError(
                f"{self.location}: not inside a run folder, so its data is unknown; pass data= (a prepared "
                "CachedDataset), or load the checkpoint from its run (leuktune.Run.open(RUN).model(trial=...))")
        data, _ = prepare(self.config, progress=lambda message: None, folder=self.run, record=False)
        return data

    def check_same_data(self, data: CachedDataset) -> None:
        """Refuse data other than the split the network was trained on (other classes, files or split)."""
        if tuple(data.class_names) != self.classes:
            raise checkpoint.CheckpointError(
                f"{self.location}: trained on classes {list(self.classes)}, but the data has "
                f"{list(data.class_names)}")
        if self.data_fingerprint != data.fingerprint:
            # Another split could put the trial's training images in the split being scored.
            raise checkpoint.CheckpointError(
                f"{self.location}: trained on data with fingerprint {self.data_fingerprint}, but this data's is "
                f"{data.fingerprint} (other files, labels or split); prepare the data from the trial's config")


def load_network(location: str, *, device: str | torch.device | None = None, run: RunFolder | None = None,
                 temperature: float = 1.0) -> TrainedModel:
    """One checkpoint folder's network, as its trial wrote it (a run's reader gives ``run`` and the temperature)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = checkpoint.load(location, device)
    cfg = checkpoint.experiment(state)
    # The weights come from the checkpoint: do not look for pretrained files again.
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_path": None})
    module = build_model(model_cfg, len(state["class_names"]), cfg.data.image_size)
    module.load_state_dict(state["model"])
    return TrainedModel(module.to(device).eval(), state, cfg, device, location, run=run, temperature=temperature)


def _as_uint8(array: np.ndarray) -> np.ndarray:
    """An image array as 8-bit: floats are taken to be in [0, 1]."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)
