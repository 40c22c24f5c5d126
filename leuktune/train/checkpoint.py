"""The one checkpoint format: written by the trainer, read to resume a trial and to evaluate.

A checkpoint is a folder (a Ray Train ``Checkpoint``) holding ``checkpoint.pt``: the
model, optimiser, scheduler and AMP scaler states, the epoch, the best score so far,
the class names, the input normalisation and the trial's resolved configuration, so
evaluation and prediction need nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leuktune.config import ExperimentConfig

FILE = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, phrased for the researcher pointing at it."""


def save(folder: str | Path, state: dict[str, Any]) -> None:
    torch.save(state, Path(folder) / FILE)


def load(folder: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``folder`` is a checkpoint folder or the ``checkpoint.pt`` in it."""
    path = Path(folder)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (expected a folder holding {FILE}, as in the "
                              "leaderboard's checkpoint_uri column)")
    try:
        # Our own files: they hold the config dict and class-name tuple, not only tensors.
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise CheckpointError(f"{path}: not a readable leuktune checkpoint ({type(err).__name__}: {err})") from None
    missing = {"model", "epoch", "class_names", "normalization", "experiment"} - set(state)
    if missing:
        raise CheckpointError(f"{path}: not a leuktune checkpoint; missing {sorted(missing)}")
    return state


def experiment(state: dict[str, Any]) -> ExperimentConfig:
    return ExperimentConfig.model_validate(state["experiment"])
