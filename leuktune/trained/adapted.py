"""A model adapted to a new lab (``leuktune.Run.adapt``): one of the run's trained models (a trial's
network, a cross-validated trial's fold model, the ensemble of either) whose networks were adapted
with a few of the lab's labelled cells, kept in the run as a kind of trained model of its own.

It is stored beside the run's models, never over them, in ``adapted/<name>/<per_class>/<model>/``:

- ``adapted.json`` (``AdaptedRecord``): the source (its location relative to the run: a checkpoint
  folder or ``ensemble.json``), the steps applied, the colour map, the temperature, what was drawn
  and the figures;
- ``network_<i>.pt``: the tensors of the source's i-th network (in ``networks()`` order) that
  adapting changed (BatchNorm statistics, tuned weights); every other tensor is the source
  checkpoint's, read from it. A network adapting left as it was has no file.

Loaded, it is a composite of one member, the source as the run holds it with those tensors put in
and the colour map in front of each network; the member's own top temperature is set to 1 and the
adapted model's temperature (re-fitted on the lab's labelled cells, or the source's) calibrates the
whole. So ``predict``, ``evaluate`` and ``export`` serve it as any model (``leuktune.trained.base``).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import pyarrow.fs as pafs
import torch
from torch import nn

from leuktune import uris
from leuktune.trained.base import Trained
from leuktune.trained.composite import Composite
from leuktune.training import checkpoint

RECORD = "adapted.json"
NETWORK = "network_{}.pt"
# The darkest intensity the colour map takes a log of: a pixel's 1/255, as the data's uint8 allow.
DARKEST = 1 / 255


@dataclass
class AdaptedRecord:
    """What an adapted model is: its ``source`` (relative to the run; ``source_id`` the trial id or
    ``ensemble``), the lab (``site``) and how many labelled cells a class it was adapted with
    (``per_class``), the ``steps`` applied, the ``colour`` map (per channel ``scale`` and ``shift``
    of log intensities, or None), its ``temperature``, a file per network (None where unchanged),
    how the cells were drawn (``seed``, counts), and the figures (cross-validation on the labelled
    cells; the lab's held-out cells)."""

    source: str
    source_id: str
    site: str
    per_class: int
    steps: list[str]
    temperature: float
    networks: list[str | None]
    colour: dict[str, list[float]] | None = None
    seed: int = 0
    cells: dict[str, int] = field(default_factory=dict)  # labelled, unlabelled, test: how many
    chosen_by: str = ""  # how the steps were chosen (cross-validation on the labelled cells, or as asked)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> AdaptedRecord:
        return cls(**json.loads(text))


def _read(location: str, name: str) -> bytes | None:
    fs, folder = uris.resolve(location)
    path = f"{folder.rstrip('/')}/{name}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def recognised(location: str) -> AdaptedRecord | None:
    """An adapted model's record, where a location is an adapted model's folder (it holds
    ``adapted.json``); None elsewhere. Read once: the loader takes it from here."""
    try:
        data = _read(location, RECORD)
    except (OSError, ValueError):
        return None
    return None if data is None else AdaptedRecord.from_json(data.decode())


def read_record(location: str) -> AdaptedRecord:
    record = recognised(location)
    if record is None:
        raise checkpoint.CheckpointError(f"{location}: not an adapted model (no {RECORD})")
    return record


def read_tensors(location: str, name: str) -> dict[str, torch.Tensor]:
    """A network's changed tensors, loaded as checkpoints are: weights and plain values only."""
    data = _read(location, name)
    if data is None:
        raise checkpoint.CheckpointError(f"{location}: {name} is missing (its {RECORD} names it)")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class ColourMap(nn.Module):
    """The lab's colours moved to the home lab's, inside the network so that an export carries it:
    each channel's log intensity (its optical density, up to sign) scaled and shifted, which undoes
    a stain's or lamp's per-channel gamma and gain exactly. It takes and gives the network's
    normalised input."""

    def __init__(self, scale: Sequence[float], shift: Sequence[float], mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        for name, values in (("scale", scale), ("shift", shift), ("mean", mean), ("std", std)):
            self.register_buffer(name, torch.tensor([float(v) for v in values]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = (x * self.std + self.mean).clamp(DARKEST, 1.0)
        unit = torch.exp(torch.log(unit) * self.scale + self.shift).clamp(0.0, 1.0)
        return (unit - self.mean) / self.std


class Recoloured(nn.Module):
    """A network with the colour map in front (``network`` is the trial's classifier)."""

    def __init__(self, colour: ColourMap, network: nn.Module):
        super().__init__()
        self.colour, self.network = colour, network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.colour(x))


def recolour(network: Trained, colour: dict[str, list[float]] | None) -> None:
    """Put the colour map in front of a network (a leaf of ``networks()``), in place; None: none."""
    if colour is not None:
        norm = network.normalization
        network.module = Recoloured(ColourMap(colour["scale"], colour["shift"], norm["mean"], norm["std"]).to(
            network.device), network.module)


class AdaptedModel(Composite):
    """A model adapted to a new lab (see the module's docstring): its one member is the source model
    with its networks adapted; ``record`` says how.

    >>> model = leuktune.Run.open("runs/x").model(adapted="lab-b", per_class=10)  # doctest: +SKIP
    >>> model.predict(["cells/a.png"])  # doctest: +SKIP
    """

    kind = "adapted"

    def __init__(self, source: Trained, record: AdaptedRecord, location: str, *, temperature: float | None = None):
        source.temperature = 1.0  # calibrated as a whole, by the adapted model's own temperature
        super().__init__([source], [1.0], [record.source_id], location,
                         temperature=record.temperature if temperature is None else temperature)
        self.record = record
        self.epoch = source.epoch

    def __repr__(self) -> str:
        return (f"AdaptedModel({self.record.source_id} adapted to {self.record.site} with {self.record.per_class} "
                f"cells a class: {', '.join(self.record.steps) or 'no step'}; from {self.location})")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "site": self.record.site, "per_class": self.record.per_class,
                "steps": list(self.record.steps), "source": self.record.source}


def assemble(source: Trained, record: AdaptedRecord, location: str, *,
             temperature: float | None = None) -> AdaptedModel:
    """The adapted model from its freshly loaded source (changed in memory, never on disk) and its record."""
    networks = source.networks()
    if len(networks) != len(record.networks):
        raise checkpoint.CheckpointError(f"{location}: {RECORD} names {len(record.networks)} network(s), its source "
                                         f"{record.source} holds {len(networks)}")
    for network, name in zip(networks, record.networks):
        if name is not None:
            unexpected = network.module.load_state_dict(read_tensors(location, name), strict=False).unexpected_keys
            if unexpected:
                raise checkpoint.CheckpointError(f"{location}: {name} holds tensors its source network lacks: "
                                                 f"{', '.join(unexpected[:3])}")
        recolour(network, record.colour)
    return AdaptedModel(source, record, location, temperature=temperature)
