"""One source model adapted to a lab: the label-free steps applied, the candidates cross-validated
on the labelled cells (``leuktune.adapting.choose``), the chosen one fitted on all of them, and the
result held as the adapted model (``leuktune.trained.adapted.AdaptedModel``) with what it saw.

>>> adapted = adapt(run.model(), lab, Plan(), seed=0)  # doctest: +SKIP
>>> adapted.model.predict(["cells/a.png"]), adapted.candidate.name  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from leuktune.adapting import choose
from leuktune.adapting.adaptation import Adaptation, Lab
from leuktune.adapting.cells import Cells, Seen
from leuktune.adapting.plan import Candidate, Plan
from leuktune.trained import Trained
from leuktune.trained.adapted import NETWORK, AdaptedModel, AdaptedRecord


@dataclass
class Adapted:
    """An adaptation's result: the model (in memory), the candidate chosen and the temperature,
    each candidate's cross-validated figures, what each step saw, and each network's changed tensors."""

    model: AdaptedModel
    candidate: Candidate
    refit_temperature: bool
    figures: dict[str, dict[str, float]]
    seen: Seen
    tensors: list[dict[str, torch.Tensor]]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[str]:
        return [*self.candidate.label_free, *([self.candidate.tuning] if self.candidate.tuning else []),
                *(["temperature"] if self.refit_temperature else [])]


def adapt(source: Trained, lab: Lab, plan: Plan, *, seed: int = 0, site: str = "lab", source_location: str = "",
          source_id: str = "", location: str = "", echo: Callable[[str], None] = lambda message: None) -> Adapted:
    """Adapt ``source`` (freshly loaded: it is changed in memory) to ``lab``: see the package's docstring."""
    started = time.perf_counter()
    source_temperature = source.temperature
    adaptation = Adaptation(source, lab, plan, seed)
    notes = []
    if "bn" in plan.steps and not adaptation.has_batchnorm():
        notes.append("bn: the network has no BatchNorm layer")
    if "head" in plan.steps and not any(n.tunable_head for n in adaptation.networks):
        notes.append("head: the head has no weights to tune (a kNN probe)")
    chosen = choose.choose(adaptation, source_temperature, echo)
    adaptation.fit(chosen.candidate, lab.labelled)
    temperature = chosen.temperature if chosen.refit else source_temperature
    if chosen.refit:
        adaptation.seen.saw("temperature", lab.labelled)
    tensors = [network.changed() for network in adaptation.networks]
    record = AdaptedRecord(
        source=source_location, source_id=source_id, site=site, per_class=_per_class(lab.labelled),
        steps=[], temperature=temperature,
        networks=[NETWORK.format(i) if changed else None for i, changed in enumerate(tensors)],
        colour=lab.colour if "colour" in chosen.candidate.label_free else None, seed=seed,
        cells={"labelled": len(lab.labelled), "unlabelled": len(lab.unlabelled)},
        chosen_by=chosen.how, figures={"cross_validation": chosen.figures})
    model = AdaptedModel(source, record, location or source.location, temperature=temperature)
    result = Adapted(model, chosen.candidate, chosen.refit, chosen.figures, adaptation.seen, tensors,
                     time.perf_counter() - started, notes)
    record.steps = result.steps
    return result


def _per_class(labelled: Cells) -> int:
    return int(np.bincount(labelled.labels).max()) if len(labelled) else 0
