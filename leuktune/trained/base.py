"""The protocol every trained model follows, whatever it is made of.

A trial's network, a cross-validated trial's K fold models, the run's weighted ensemble (of
either) and, later, a model adapted to a new lab are all used the same way: as scikit-learn's
composite estimators accept any estimator and call it through the same methods, a composite here
holds any trained models as ``members`` and calls them through this protocol, so nothing that
loads, serves, evaluates or exports a model asks which kind it holds.

What a trained model has:

- ``classes``: the class names in output order; ``temperature``: what divides its log
  probabilities to calibrate them (1.0 until the final evaluation fits one);
- ``probabilities(images, rows=None, tta=False)``: uncalibrated class probabilities of decoded
  uint8 images (N, H, W, 3); ``split_probabilities(data, split)``: of one split of the run's data;
- ``members`` and ``weights``: what a composite averages (both empty for a single network);
- ``describe()``: a JSON-ready record of what it is (kind, where it was read from, its members);
- ``normalization``, ``stain_normalizer``, ``load_images``, ``model_input``: how its input is made
  (a composite's are its first member's: every trial of a search shares the data configuration);
- ``data()``: the run's data, read back where the run is now.

The verbs a user calls, ``evaluate`` and ``predict``, are written once, here, on top of those.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leuktune.metrics import split_scores
from leuktune.metrics.calibration import rescale

if TYPE_CHECKING:  # the data layer imports Ray: loading a model to predict does not need it
    from leuktune.data.cache import CachedDataset


class Trained:
    """A trained model (see the module's docstring for the protocol); the shared verbs."""

    classes: tuple[str, ...]
    temperature: float
    location: str
    members: tuple[Trained, ...] = ()
    weights: tuple[float, ...] = ()
    epoch: int | None = None  # the kept epoch of a trial (a network or a fold model), None for a mix

    def probabilities(self, images: np.ndarray, *, rows: np.ndarray | None = None, tta: bool = False) -> np.ndarray:
        """Uncalibrated class probabilities of decoded uint8 images (N, H, W, 3), of ``rows`` of them
        (default: all) in that order; with ``tta``, averaged over each image and its flips."""
        raise NotImplementedError

    def split_probabilities(self, data: CachedDataset, split: str, *, tta: bool = False) -> np.ndarray:
        """Uncalibrated class probabilities of one split of the run's data, in the split's order."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What this model is, as a JSON-ready dict: ``kind``, ``location``, ``temperature`` and, for a
        composite, its ``members`` (each described, with its ``name`` and ``weight``)."""
        raise NotImplementedError

    def with_temperature(self, temperature: float) -> Trained:
        """This model calibrated by ``temperature``, as a copy (its networks shared, not copied): the
        model itself keeps its own, whoever else holds it."""
        calibrated = copy.copy(self)
        calibrated.temperature = float(temperature)
        return calibrated

    def networks(self) -> list[Trained]:
        """The single networks this model is made of, first member first (itself for a network)."""
        return [network for member in self.members for network in member.networks()] if self.members else [self]

    def data(self) -> CachedDataset:
        """The data of the run the model was trained in, read back where the run is now (its saved split;
        decoded images from this machine's cache); nothing is written into the run."""
        raise NotImplementedError

    def evaluate(self, split: str = "test", *, data: CachedDataset | None = None) -> dict[str, Any]:
        """Metrics (``<split>_*``), confusion matrix and image count on one split of the data the
        model was trained on. ``data`` defaults to the run's own, read back from the run folder
        that holds the checkpoint, where it is now (its saved split; decoded images come from this
        machine's cache); nothing is written into the run.

        >>> model = leuktune.load_model(board.iloc[0])  # doctest: +SKIP
        >>> model.evaluate("test")["test_balanced_accuracy"]  # doctest: +SKIP
        0.98
        """
        data = data if data is not None else self.data()
        probs = self.split_probabilities(data, split)
        scores = split_scores(data.labels[data.indices(split)], probs, split)
        return scores if self.epoch is None else {**scores, "epoch": self.epoch}

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
            probs[ok] = rescale(self.probabilities(pixels, tta=tta), self.temperature)
        out.insert(1, "class", [self.classes[p] if good else None for p, good in zip(probs.argmax(axis=1), ok)])
        out.insert(2, "probability", probs.max(axis=1))  # NaN for an input that could not be read
        for c, name in enumerate(self.classes):
            out[f"p_{name}"] = probs[:, c]
        return out

    def load_images(self, images: Any) -> tuple[np.ndarray, pd.DataFrame]:
        raise NotImplementedError
