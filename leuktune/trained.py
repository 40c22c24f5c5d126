"""A trained model, as a researcher holds it after a search: ``leuktune.load_model``.

It is read from a trial's checkpoint, which carries everything needed to use it: the
weights, the class names, the input normalisation, the trial's configuration and the fingerprint
of the data split it was trained on. A checkpoint is never written after its trial: the
temperature that calibrates its probabilities is the final evaluation's (``test.parquet`` of the
run that holds the checkpoint), and the data it is scored on is that run's, read back where the
run is now.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from leuktune import leaderboard, runfolder, uris
from leuktune.config import ExperimentConfig
from leuktune.leaderboard import ENSEMBLE_ID
from leuktune.metrics.calibration import rescale
from leuktune.metrics import split_scores
from leuktune.models.classifier import Classifier, build_model
from leuktune.results import EnsembleRecord
from leuktune.runfolder import RunFolder, RunFolderError
from leuktune.training import checkpoint
from leuktune.training.device import BatchSource, DeviceSetup
from leuktune.training.probabilities import class_probabilities

if TYPE_CHECKING:  # the data layer imports Ray: loading a model to predict does not need it
    from leuktune.data.cache import CachedDataset


class _Classifies:
    """The verbs a trained model and an ensemble share; each provides ``classes``,
    ``temperature``, ``probabilities``, ``_probabilities`` and ``load_images``."""

    classes: tuple[str, ...]
    temperature: float

    def evaluate(self, split: str = "test", *, data: CachedDataset | None = None) -> dict[str, Any]:
        """Metrics (``<split>_*``), confusion matrix and image count on one split of the data the
        model was trained on. ``data`` defaults to the run's own, read back from the run folder
        that holds the checkpoint, where it is now (its saved split; decoded images come from this
        machine's cache); nothing is written into the run.

        >>> model = leuktune.load_model(board.iloc[0])  # doctest: +SKIP
        >>> model.evaluate("test")["test_balanced_accuracy"]  # doctest: +SKIP
        0.98
        """
        data = data if data is not None else self._prepare_data()
        probs = self.probabilities(data, split)
        return split_scores(data.labels[data.indices(split)], probs, split)

    def predict(self, images: Any, *, tta: bool = False) -> pd.DataFrame:
        """Class and calibrated probabilities for images: file paths, PIL images or arrays
        (H, W, 3), one or a list. Each is resized and normalised as in training. A file that
        cannot be read gets its row with ``error`` set; the others are classified.

        >>> model.predict(["cells/a.png", "cells/b.bmp"])  # doctest: +SKIP
        """
        pixels, out = self.load_images(images)
        ok = out["error"].isna().to_numpy()
        probs = np.full((len(out), len(self.classes)), np.nan)
        if len(pixels):
            probs[ok] = rescale(self._probabilities(pixels, np.arange(len(pixels)), tta=tta), self.temperature)
        out.insert(1, "class", [self.classes[p] if good else None for p, good in zip(probs.argmax(axis=1), ok)])
        out.insert(2, "probability", probs.max(axis=1))  # NaN for an input that could not be read
        for c, name in enumerate(self.classes):
            out[f"p_{name}"] = probs[:, c]
        return out


class TrainedModel(_Classifies):
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

    @property
    def setup(self) -> DeviceSetup:
        return DeviceSetup.create(self.device, self.normalization["mean"], self.normalization["std"],
                                  self.config.train)

    def _probabilities(self, images: np.ndarray, rows: np.ndarray, tta: bool = False,
                       batch_size: int = 64) -> np.ndarray:
        setup = self.setup
        source = BatchSource(images, np.zeros(len(images), np.int64), self.device)
        return class_probabilities(setup.prepare(self.module), source, rows, setup, batch_size, len(self.classes), tta=tta)

    def probabilities(self, data: CachedDataset, split: str, tta: bool = False) -> np.ndarray:
        """Uncalibrated class probabilities of one split's images, in the split's order; with
        ``tta``, averaged over the image and its flips."""
        self._check_same_data(data)
        return self._probabilities(data.pixels(), data.indices(split), tta=tta)

    def evaluate(self, split: str = "test", *, data: CachedDataset | None = None) -> dict[str, Any]:
        return {**super().evaluate(split, data=data), "epoch": self.epoch}

    evaluate.__doc__ = _Classifies.evaluate.__doc__

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

    def _prepare_data(self) -> CachedDataset:
        # the data layer imports Ray: predicting from files does not need it
        from leuktune.data.prepare import prepare

        if self.run is None:
            raise checkpoint.CheckpointError(
                f"{self.location}: not inside a run folder, so its data is unknown; pass data= (a prepared "
                "CachedDataset), or load the checkpoint from its run (leuktune.Run.open(RUN).model(trial=...))")
        data, _ = prepare(self.config, progress=lambda message: None, folder=self.run, record=False)
        return data

    def _check_same_data(self, data: CachedDataset) -> None:
        if tuple(data.class_names) != self.classes:
            raise checkpoint.CheckpointError(
                f"{self.location}: trained on classes {list(self.classes)}, but the data has "
                f"{list(data.class_names)}")
        if self.data_fingerprint != data.fingerprint:
            # Another split could put the trial's training images in the split being scored.
            raise checkpoint.CheckpointError(
                f"{self.location}: trained on data with fingerprint {self.data_fingerprint}, but this data's is "
                f"{data.fingerprint} (other files, labels or split); prepare the data from the trial's config")


def combine(member_probs: list[np.ndarray], weights) -> np.ndarray:
    """The weighted average of the members' (calibrated) probabilities."""
    return sum(w * p for w, p in zip(weights, member_probs) if w > 0)


class EnsembleModel(_Classifies):
    """The search's weighted ensemble, used as one model: ``probabilities`` averages the members'
    calibrated probabilities with their weights (uncalibrated as the ensemble: ``predict``
    rescales them by ``temperature``). Images are read as its first member reads them (every
    trial of a search shares the data configuration).

    >>> ensemble = leuktune.load_model("runs/synthetic-default", trial="ensemble")  # doctest: +SKIP
    >>> ensemble.predict(["cells/a.png"])  # doctest: +SKIP
    """

    def __init__(self, members: list[TrainedModel], record: EnsembleRecord, location: str):
        self.members, self.record, self.location = members, record, location
        self.weights = list(record.weights)
        self.classes = members[0].classes
        self.config = members[0].config
        self.temperature = record.temperature

    def __repr__(self) -> str:
        parts = ", ".join(f"{m.config.model.backbone} x {w:.2f}" for m, w in zip(self.members, self.weights))
        return f"EnsembleModel({parts}; classes={list(self.classes)}, from {self.location})"

    def probabilities(self, data: CachedDataset, split: str, tta: bool = False) -> np.ndarray:
        return combine([rescale(m.probabilities(data, split, tta=tta), m.temperature) for m in self.members],
                       self.weights)

    def _probabilities(self, images: np.ndarray, rows: np.ndarray, tta: bool = False) -> np.ndarray:
        return combine([rescale(m._probabilities(images, rows, tta=tta), m.temperature) for m in self.members],
                       self.weights)

    def load_images(self, images: Any) -> tuple[np.ndarray, pd.DataFrame]:
        return self.members[0].load_images(images)

    def _prepare_data(self) -> CachedDataset:
        return self.members[0]._prepare_data()


class FoldModel(EnsembleModel):
    """A cross-validated trial's model (``search.cv``): its K fold models as one, their
    probabilities averaged with equal weights (uncalibrated as the trial: ``predict`` rescales
    them by the temperature the final evaluation fitted). The folds share the trial's recipe and
    its epoch, so one temperature for their average serves where K would each be fitted on a fifth
    of the images.

    On the training and validation images each image is predicted by the fold model that held it
    out (out of fold): what the final evaluation fits the temperature on and the run's ensemble
    selects on are predictions of images the model did not train on. The test split, and any
    other image, gets the average of all K.

    >>> model = leuktune.load_model(board.iloc[0])  # a trial of a search with search.cv: 5  # doctest: +SKIP
    >>> model  # doctest: +SKIP
    FoldModel(5 folds of test_resnet + linear head, epoch 7, ...)
    """

    def __init__(self, members: list[TrainedModel], location: str, *, temperature: float = 1.0):
        k = len(members)
        record = EnsembleRecord(members=[f"fold {f}" for f in range(k)], weights=[1 / k] * k,
                                checkpoints=[m.location for m in members], temperatures=[1.0] * k)
        super().__init__(members, record, location)
        self.temperature = temperature
        self.epoch = members[0].epoch
        self.normalization = members[0].normalization

    def __repr__(self) -> str:
        first = self.members[0].config.model
        return (f"FoldModel({len(self.members)} folds of {first.backbone} + {first.head} head, epoch {self.epoch}, "
                f"classes={list(self.classes)}, from {self.location})")

    def probabilities(self, data: CachedDataset, split: str, tta: bool = False) -> np.ndarray:
        if split == "test":
            return super().probabilities(data, split, tta=tta)
        # the data layer imports Ray: predicting from files does not need it
        from leuktune.data.folds import cv_folds

        self.members[0]._check_same_data(data)
        rows = data.indices(split)
        out = np.full((len(rows), len(self.classes)), np.nan)
        folds = cv_folds(data, len(self.members), self.config.data.split.seed)
        for member, fold in zip(self.members, folds):
            held = np.isin(rows, fold.indices("val"))
            if held.any():
                out[held] = member._probabilities(data.pixels(), rows[held], tta=tta)
        return out


def load_folds(location: str, *, device: str | torch.device | None = None, run: RunFolder | None = None,
               temperature: float = 1.0) -> FoldModel:
    """A cross-validated trial's model from its checkpoint folder (fold_0/ ... and meta.json)."""
    members = [load_checkpoint(checkpoint.fold_location(location, f), device=device, run=run)
               for f in range(checkpoint.folds_of(location))]
    return FoldModel(members, location, temperature=temperature)


def load_ensemble(run: RunFolder, *, device: str | torch.device | None = None) -> EnsembleModel:
    """A run's weighted ensemble (written by its final evaluation), its members loaded from where the run is now."""
    record = leaderboard.ensemble(run)
    if record is None:
        raise checkpoint.CheckpointError(f"{run.uri()}: no ensemble ({runfolder.ENSEMBLE}); the final evaluation "
                                         "builds one when evaluate.ensemble is 2 or more and two trials have checkpoints")
    # each member with the temperature the ensemble was selected with
    members = [load_checkpoint(run.located(location), device=device, run=run, temperature=temperature)
               for location, temperature in zip(record.checkpoints, record.temperatures)]
    return EnsembleModel(members, record, run.uri())


def _as_uint8(array: np.ndarray) -> np.ndarray:
    """An image array as 8-bit: floats are taken to be in [0, 1]."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def trial_row(run: RunFolder, trial: str | None) -> pd.Series:
    """The leaderboard row of a run's trial (default: its best trial that has a checkpoint), its
    ``checkpoint_uri`` where the run is now."""
    board = leaderboard.load(run.uri())
    rows = board[board["trial_id"] == trial] if trial else \
        leaderboard.trial_rows(board)[lambda b: b["checkpoint_uri"].notna()]
    if rows.empty:
        raise checkpoint.CheckpointError(f"{run.uri()}: " + (
            f"no trial {trial!r}; its trials are {', '.join(board['trial_id'])}" if trial
            else "no trial with a checkpoint yet"))
    return rows.iloc[0]


def _temperature(location: str, run: RunFolder | None) -> float:
    """The temperature the final evaluation fitted for the trial whose checkpoint this is (its run's
    ``test.parquet``; a checkpoint of an earlier release may keep it in its folder); 1.0 before."""
    if run is not None:
        trials = leaderboard.trials(run)
        relative = run.relative(location)
        if len(trials) and relative is not None:
            ids = trials.loc[[run.relative(c) == relative for c in trials["checkpoint_uri"]], "trial_id"]
            scored = leaderboard.tests(run)
            scored = scored[scored["trial_id"].isin(list(ids)) & scored["temperature"].notna()]
            if len(scored):
                return float(scored["temperature"].iloc[0])
    return float(checkpoint.read_calibration(location).get("temperature", 1.0))


def _run_of(location: str | Path) -> RunFolder | None:
    """The run folder a location is (or whose leaderboard file it is), or None (a checkpoint's folder)."""
    try:
        return leaderboard.run_folder(location)
    except RunFolderError:
        return None


def load_model(source, *, device: str | torch.device | None = None,
               trial: str | None = None) -> TrainedModel | EnsembleModel:
    """The trained model of a checkpoint: a folder (a leaderboard's ``checkpoint_uri``), the
    ``checkpoint.pt`` in it, a leaderboard row, or a run folder (its best trial, or ``trial``;
    ``trial="ensemble"``: the weighted ensemble of its best trials), wherever the run is now. A
    cross-validated trial's checkpoint gives its ``FoldModel``.

    >>> model = leuktune.load_model("runs/synthetic-default")  # doctest: +SKIP
    >>> model = leuktune.load_model(board.iloc[0])  # doctest: +SKIP
    >>> ensemble = leuktune.load_model("runs/synthetic-default", trial="ensemble")  # doctest: +SKIP
    """
    temperature, run = None, None
    if isinstance(source, (str, Path)):
        run = _run_of(source)
        if run is None and trial:
            raise checkpoint.CheckpointError(f"{source}: not a run folder (no {runfolder.CONFIG}); trial= picks a "
                                             "trial of a run")
        if run is not None:
            if trial == ENSEMBLE_ID:
                return load_ensemble(run, device=device)
            source = trial_row(run, trial)
    if hasattr(source, "get"):  # a leaderboard row
        row = source
        source = row.get("checkpoint_uri")
        if source is None or source != source:
            raise checkpoint.CheckpointError(
                f"trial {row.get('trial_id')} has no checkpoint (status {row.get('status')!r})")
        if row.get("trial_id") == ENSEMBLE_ID:  # the ensemble's row: its checkpoint_uri is the run's ensemble.json
            return load_ensemble(RunFolder.existing(uris.split_last(source)[0]), device=device)
        if pd.notna(row.get("temperature", None)):
            temperature = float(row["temperature"])
    location = str(source)  # the checkpoint's folder, given as it or as its checkpoint.pt
    if location.rstrip("/").endswith(checkpoint.FILE):
        location = location.rstrip("/")[: -len(checkpoint.FILE) - 1]
    run = run or RunFolder.enclosing(location)  # the run its row came from, else found above the checkpoint
    temperature = _temperature(location, run) if temperature is None else temperature
    if checkpoint.folds_of(location):
        return load_folds(location, device=device, run=run, temperature=temperature)
    return load_checkpoint(location, device=device, run=run, temperature=temperature)


def load_checkpoint(location: str, *, device: str | torch.device | None = None, run: RunFolder | None = None,
                    temperature: float = 1.0) -> TrainedModel:
    """One checkpoint folder's model, as it was written (a run's reader gives ``run`` and the temperature)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = checkpoint.load(location, device)
    cfg = checkpoint.experiment(state)
    # The weights come from the checkpoint: do not look for pretrained files again.
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_path": None})
    module = build_model(model_cfg, len(state["class_names"]), cfg.data.image_size)
    module.load_state_dict(state["model"])
    return TrainedModel(module.to(device).eval(), state, cfg, device, location, run=run, temperature=temperature)
