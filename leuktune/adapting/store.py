"""Where a run keeps its adapted models, and reading them back: ``adapted/<name>/`` holds a lab's
``curve.parquet`` and, per ``per_class``, ``cells.parquet`` (each cell of the lab: its role,
labelled, unlabelled, test or aside, and the steps that saw it) and a folder per adapted model
(``leuktune.trained.adapted``). Written once: a name already there is refused."""

from __future__ import annotations

import io

import pandas as pd
import torch

from leuktune import runfolder
from leuktune.adapting.curve import COLUMNS
from leuktune.config import ConfigError
from leuktune.runfolder import RunFolder
from leuktune.trained.adapted import RECORD, AdaptedRecord
from leuktune.training.checkpoint import CheckpointError

CURVE = "curve.parquet"
CELLS = "cells.parquet"


def claim(folder: RunFolder, name: str) -> None:
    """Refuse a lab's name that the run already holds adaptations under (they are written once)."""
    if folder.exists(runfolder.adapted(name)):
        finished = folder.exists(runfolder.adapted(name, part=CURVE))
        raise ConfigError(f"{folder.uri()}: {runfolder.adapted(name)} exists ("
                          + ("adapted before" if finished else "an adaptation that did not finish: no " + CURVE)
                          + "); adapted models are written once: choose another --name, or remove that folder")


def write_model(folder: RunFolder, name: str, per_class: int, model_id: str, record: AdaptedRecord,
                tensors: list[dict[str, torch.Tensor]]) -> str:
    """Write an adapted model's record and its networks' changed tensors; returns its run-relative folder."""
    base = runfolder.adapted(name, per_class, model_id)
    for file, changed in zip(record.networks, tensors):
        if file is not None:
            buffer = io.BytesIO()
            torch.save(changed, buffer)
            folder.write_bytes(f"{base}/{file}", buffer.getvalue())
    folder.write_text(f"{base}/{RECORD}", record.to_json())
    return base


def names(folder: RunFolder) -> list[str]:
    """The labs the run was adapted to."""
    return [n for n in folder.listdir(folder.file(runfolder.ADAPTED)) if not n.startswith(".")]


def per_class_of(folder: RunFolder, name: str) -> list[int]:
    """The ``per_class`` a lab's adaptations hold, smallest first."""
    return sorted(int(n) for n in folder.listdir(folder.file(runfolder.adapted(name))) if n.isdigit())


def curves(folder: RunFolder) -> pd.DataFrame:
    """Every lab's curve, one after another (empty before the first adaptation)."""
    found = [folder.read_frame(runfolder.adapted(n, part=CURVE)) for n in names(folder)
             if folder.exists(runfolder.adapted(n, part=CURVE))]
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=COLUMNS)


def location(folder: RunFolder, name: str, per_class: int | None = None, trial: str | None = None) -> str:
    """Where an adapted model is now: lab ``name``, ``per_class`` (default: the largest adapted),
    ``trial`` (a trial id or ``ensemble``; default: the trial adapted beside the ensemble)."""
    held = names(folder)
    if name not in held:
        raise CheckpointError(f"{folder.uri()}: no model adapted to {name!r}; "
                              + (f"its adapted labs are {', '.join(held)}" if held else
                                 "adapt one first (python -m leuktune.adapt RUN --labelled ROOT)"))
    counts = per_class_of(folder, name)
    if per_class is None:
        per_class = counts[-1]
    if per_class not in counts:
        raise CheckpointError(f"{folder.uri()}: {name!r} was adapted with {', '.join(map(str, counts))} labelled cells "
                              f"a class, not {per_class}")
    models = [m for m in folder.listdir(folder.file(runfolder.adapted(name, per_class))) if m != CELLS]
    if trial is None:
        trials = [m for m in models if m != "ensemble"] or models
        trial = trials[0]
    if trial not in models:
        raise CheckpointError(f"{folder.uri()}: {name!r} with {per_class} cells a class holds {', '.join(models)}, "
                              f"not {trial!r}")
    return folder.uri(folder.file(runfolder.adapted(name, per_class, trial)))
