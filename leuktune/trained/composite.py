"""Trained models made of trained models: the run's weighted ensemble and a cross-validated trial's
fold models. A member may be any trained model, a composite too (an ensemble of fold models): each
member is called through the protocol of ``leuktune.trained.base``, never asked what it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from leuktune.config.search import SITES
from leuktune.metrics.calibration import rescale
from leuktune.results import EnsembleRecord
from leuktune.trained.base import Trained
from leuktune.training import checkpoint

if TYPE_CHECKING:  # the data layer imports Ray: loading a model to predict does not need it
    from leuktune.data.cache import CachedDataset


def combine(member_probs: list[np.ndarray], weights) -> np.ndarray:
    """The weighted average of the members' (calibrated) probabilities."""
    return sum(w * p for w, p in zip(weights, member_probs) if w > 0)


class Composite(Trained):
    """Members' calibrated probabilities averaged with weights; uncalibrated as a whole (``predict``
    rescales them by the composite's own ``temperature``). Images are read as its first member
    reads them: the members share the data configuration of one search."""

    kind = "composite"

    def __init__(self, members: Sequence[Trained], weights: Sequence[float], names: Sequence[str], location: str,
                 *, temperature: float = 1.0):
        if not members:
            raise checkpoint.CheckpointError(f"{location}: a {self.kind} without members")
        differing = [m.location for m in members if tuple(m.classes) != tuple(members[0].classes)]
        if differing:
            raise checkpoint.CheckpointError(f"{location}: its members predict different classes "
                                             f"({list(members[0].classes)} in {members[0].location}; not in "
                                             f"{', '.join(differing)})")
        self.members, self.weights, self.names = tuple(members), tuple(float(w) for w in weights), tuple(names)
        self.location, self.temperature = location, temperature
        self.classes = tuple(members[0].classes)
        self.config = members[0].config

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "temperature": self.temperature,
                "members": [{"name": name, "weight": weight, **member.describe()}
                            for name, weight, member in zip(self.names, self.weights, self.members)]}

    def probabilities(self, images: np.ndarray, *, rows: np.ndarray | None = None, tta: bool = False) -> np.ndarray:
        return combine([rescale(m.probabilities(images, rows=rows, tta=tta), m.temperature) for m in self.members],
                       self.weights)

    def split_probabilities(self, data: CachedDataset, split: str, *, tta: bool = False) -> np.ndarray:
        # each member its own way (a fold model out of fold on the images its folds trained on)
        return combine([rescale(m.split_probabilities(data, split, tta=tta), m.temperature) for m in self.members],
                       self.weights)

    # how the input is made: the first member's (one search's data configuration)
    @property
    def normalization(self) -> dict[str, tuple]:
        return self.members[0].normalization

    @property
    def stain_normalizer(self):
        return self.members[0].stain_normalizer

    @property
    def device(self):
        return self.members[0].device

    def load_images(self, images: Any):
        return self.members[0].load_images(images)

    def model_input(self, pixels: np.ndarray):
        return self.members[0].model_input(pixels)

    def data(self) -> CachedDataset:
        return self.members[0].data()


class EnsembleModel(Composite):
    """The search's weighted ensemble (``ensemble.json``), used as one model; its members are the
    best trials, each a network or a cross-validated trial's fold model.

    >>> ensemble = leuktune.load_model("runs/synthetic-default", trial="ensemble")  # doctest: +SKIP
    >>> ensemble.predict(["cells/a.png"])  # doctest: +SKIP
    """

    kind = "ensemble"

    def __init__(self, members: Sequence[Trained], record: EnsembleRecord, location: str):
        super().__init__(members, record.weights, record.members, location, temperature=record.temperature)
        self.record = record

    def __repr__(self) -> str:
        parts = ", ".join(f"{n} ({m.config.model.backbone}) x {w:.2f}"
                          for n, m, w in zip(self.names, self.members, self.weights))
        return f"EnsembleModel({parts}; classes={list(self.classes)}, from {self.location})"


class FoldModel(Composite):
    """A cross-validated trial's model (``search.cv``: K, or ``sites``: a member per held-out lab):
    its K fold models as one, their
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

    kind = "folds"

    def __init__(self, members: Sequence[Trained], location: str, *, temperature: float = 1.0):
        k = len(members)
        super().__init__(members, [1 / k] * k, [f"fold {f}" for f in range(k)], location, temperature=temperature)
        self.epoch = members[0].epoch

    def __repr__(self) -> str:
        first = self.config.model
        return (f"FoldModel({len(self.members)} folds of {first.backbone} + {first.head} head, epoch {self.epoch}, "
                f"classes={list(self.classes)}, from {self.location})")

    def split_probabilities(self, data: CachedDataset, split: str, *, tta: bool = False) -> np.ndarray:
        if split == "test":
            return super().split_probabilities(data, split, tta=tta)
        # the data layer imports Ray: predicting from files does not need it
        from leuktune.data.folds import dealt

        self.members[0].check_same_data(data)
        rows = data.indices(split)
        out = np.full((len(rows), len(self.classes)), np.nan)
        # search.cv: sites: each member held out one training site (in the data's order), else one of K dealt folds
        cv = SITES if self.config.search.cv == SITES else len(self.members)
        folds = dealt(data, cv, self.config.data.split.seed)
        pixels = data.for_stain(self.config.data.stain_normalize).pixels()  # the folds' one method
        for member, fold in zip(self.members, folds):
            held = np.isin(rows, fold.indices("val"))
            if held.any():
                out[held] = rescale(member.probabilities(pixels, rows=rows[held], tta=tta), member.temperature)
        return out
