"""The source model's networks while they are adapted, and the source's probabilities put together
from its networks' as the model itself would (``leuktune.trained.base``'s protocol).

A source is freshly loaded for each adaptation (``leuktune.trained.load``): what is changed here is
that copy in memory; its checkpoint is only ever read.
"""

from __future__ import annotations

import numpy as np
import torch

from leuktune.metrics.calibration import rescale
from leuktune.trained import Trained
from leuktune.trained.adapted import recolour
from leuktune.trained.composite import combine


class Network:
    """One network of the source (a leaf of ``networks()``): its classifier, the tensors it came
    with, and the colour map in front of it where a candidate applies one."""

    def __init__(self, leaf: Trained):
        self.leaf = leaf
        self.classifier = leaf.module
        self.original = {k: v.detach().clone() for k, v in self.classifier.state_dict().items()}
        self.depth = self.classifier.unfreeze_depth
        self.setup = leaf.setup

    @property
    def config(self):
        return self.leaf.config

    @property
    def tunable_head(self) -> bool:
        """Whether its head has weights to tune (a kNN probe's bank has none)."""
        return any(True for _ in self.classifier.head.parameters())

    def reset(self, colour: dict | None = None) -> None:
        """The network as it came, with ``colour``'s map in front (None: none)."""
        self.classifier.load_state_dict(self.original)
        self.classifier.eval()
        self.leaf.module = self.classifier
        recolour(self.leaf, colour)

    def inputs(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 pixels -> the classifier's input: normalised, and recoloured where the map is on."""
        setup = self.setup
        x = setup.model_input(setup.to_unit(torch.from_numpy(np.ascontiguousarray(pixels))))
        module = self.leaf.module
        return module.colour(x) if module is not self.classifier else x

    def changed(self) -> dict[str, torch.Tensor]:
        """The classifier's tensors that differ from those it came with (what an adapted model stores)."""
        return {k: v.detach().cpu().clone() for k, v in self.classifier.state_dict().items()
                if not torch.equal(v.detach().cpu(), self.original[k].cpu())}


def networks(source: Trained) -> list[Network]:
    return [Network(leaf) for leaf in source.networks()]


def combined(model: Trained, leaf_probs: dict[int, np.ndarray]) -> np.ndarray:
    """``model``'s uncalibrated probabilities from its networks' (``leaf_probs``: id(network) ->
    probabilities), each composite averaging its members' calibrated ones with its weights, as
    ``Composite.probabilities`` does for images it has not trained on."""
    if not model.members:
        return leaf_probs[id(model)]
    return combine([rescale(combined(m, leaf_probs), m.temperature) for m in model.members], model.weights)
