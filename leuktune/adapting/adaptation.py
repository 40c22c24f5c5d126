"""A source model's networks while a lab adapts them: the label-free steps applied once a setting
(on the labelled and unlabelled cells, labels unread) and a candidate's tuning fitted on labelled
cells, each step noting the cells it was handed (``leuktune.adapting.cells.Seen``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from leuktune.adapting import batchnorm, tuning
from leuktune.adapting.cells import Cells, Seen
from leuktune.adapting.networks import Network, networks
from leuktune.adapting.plan import Candidate, Plan
from leuktune.trained import Trained


@dataclass(frozen=True)
class Lab:
    """What a lab gives adapting: ``labelled`` cells (class ids and groups), ``unlabelled`` ones
    (label-free steps read both), and the ``colour`` map from its statistics to the home lab's
    (None where the colour step is not asked for)."""

    labelled: Cells
    unlabelled: Cells
    colour: dict[str, list[float]] | None = None

    def pool(self, most_unlabelled: int, seed: int) -> Cells:
        """The images label-free steps read: every labelled cell and up to ``most_unlabelled``
        unlabelled ones (a seeded draw)."""
        extra = self.unlabelled
        if len(extra) > most_unlabelled:
            drawn = np.random.default_rng(seed).choice(len(extra), most_unlabelled, replace=False)
            extra = extra.subset(np.sort(drawn))
        return self.labelled + extra


class Adaptation:
    """The source's networks while a lab adapts them (see ``adapt``)."""

    def __init__(self, source: Trained, lab: Lab, plan: Plan, seed: int):
        self.source, self.lab, self.plan, self.seed = source, lab, plan, seed
        self.networks: list[Network] = networks(source)
        self.pool = lab.pool(plan.most_unlabelled, seed)
        self.seen = Seen()
        self._label_free: dict[tuple[str, ...], list[dict[str, torch.Tensor]]] = {}

    def apply(self, label_free: tuple[str, ...]) -> None:
        """Every network as it came, with the label-free steps of ``label_free`` applied (computed
        once a setting, on the pool of images; labels unread)."""
        colour = self.lab.colour if "colour" in label_free else None
        done = self._label_free.get(label_free)
        for i, network in enumerate(self.networks):
            network.reset(colour)
            if done is not None:
                network.classifier.load_state_dict(done[i], strict=False)
            elif "bn" in label_free:
                batchnorm.reestimate(network, self.pool.pixels, self.plan.batch_size)
        if done is None:
            for step in label_free:
                self.seen.saw(step, self.pool)
            self._label_free[label_free] = [network.changed() for network in self.networks]

    def fit(self, candidate: Candidate, cells: Cells, step: str = "tune") -> None:
        """Apply ``candidate`` tuned on labelled ``cells`` (its label-free steps on the pool)."""
        self.apply(candidate.label_free)
        if candidate.tuning is None:
            return
        self.seen.saw(step, cells)
        for network in self.networks:
            if candidate.tuning == "head":
                if network.tunable_head:
                    feats = tuning.features(network, cells.pixels, self.plan.views, self.plan.batch_size)
                    head = tuning.tune_head(network, feats, cells.labels, self.plan, self.seed)
                    network.classifier.head.load_state_dict(head.state_dict())
            else:
                tuning.tune_deep(network, cells.pixels, cells.labels, candidate.tuning, self.plan, self.seed)

    def has_batchnorm(self) -> bool:
        return any(batchnorm.layers(network) for network in self.networks)
