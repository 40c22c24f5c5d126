"""One loader for every kind of trained model, recursing into composites' members.

Each kind is registered with how its own record is recognised (timm's registry is the model):
an ensemble by its record (``ensemble.json``), a cross-validated trial by its checkpoint's
``meta.json`` naming folds, a model adapted to a new lab by its ``adapted.json``, a network by its
``checkpoint.pt``. What recognised a kind is handed to its loader (the number of folds, read once).
``load`` tries them in order, and
a composite loads each member with ``load`` again, so an ensemble of fold models (or whatever a
later kind holds) needs nothing new here or in the code that uses it.

Locations follow one rule (``located``): a local path, absolute or relative to the working
directory, is made absolute before anything else, so a checkpoint is found, and its temperature
looked up in its run, the same way whether its path was typed absolute, relative or as a URI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from leuktune import leaderboard, runfolder, uris
from leuktune.leaderboard import ENSEMBLE_ID
from leuktune.results import EnsembleRecord
from leuktune.runfolder import RunFolder, RunFolderError
from leuktune.trained import adapted
from leuktune.trained.base import Trained
from leuktune.trained.composite import EnsembleModel, FoldModel
from leuktune.trained.network import load_network
from leuktune.training import checkpoint

Device = str | torch.device | None


@dataclass(frozen=True)
class Kind:
    """A kind of trained model: what of its own record a location holds (falsy: not this kind), and
    how to load it from there given that (``temperature=None``: the one the run holding it fitted)."""

    name: str
    recognise: Callable[[str], Any]
    load: Callable[..., Trained]


KINDS: list[Kind] = []


def register(name: str, recognise: Callable[[str], Any]):
    """Add a kind of trained model to ``load``'s table, tried before those registered earlier (the
    network, registered first, takes any checkpoint folder left). ``recognise(location)``: what of
    the kind's record is there (falsy: none), handed to the loader as ``record``."""
    def add(load_kind: Callable[..., Trained]) -> Callable[..., Trained]:
        KINDS.insert(0, Kind(name, recognise, load_kind))
        return load_kind
    return add


def located(location: str | Path) -> str:
    """A model's location as every lookup takes it: a URI as it is, a local path absolute (``~``
    expanded), a checkpoint's ``checkpoint.pt`` as its folder."""
    text = str(location).rstrip("/")
    if text.endswith("/" + checkpoint.FILE) or text == checkpoint.FILE:
        text = text[: -len(checkpoint.FILE)].rstrip("/") or "."
    return text if uris.is_uri(text) and not text.startswith("file://") else uris.local_path(text)


def load(location: str | Path, *, device: Device = None, run: RunFolder | None = None,
         temperature: float | None = None) -> Trained:
    """The trained model at ``location`` (a checkpoint folder, a cross-validated trial's, an ensemble's
    record), whatever its kind; ``run``: the run that holds it (default: found above it);
    ``temperature``: its calibration (default: what its run's final evaluation fitted, else 1.0)."""
    location = located(location)
    # the network kind, tried last, recognises every location
    kind, record = next((kind, record) for kind in KINDS if (record := kind.recognise(location)))
    return kind.load(location, record, device=device, run=run, temperature=temperature)


def fitted_temperature(location: str, run: RunFolder | None) -> float:
    """The temperature the final evaluation fitted for the trial whose checkpoint this is (its run's
    ``test.parquet``; a checkpoint of an earlier release may keep it in its folder); 1.0 before."""
    if run is not None:
        trials = leaderboard.trials(run)
        relative = run.relative(location)
        if len(trials) and relative is not None:
            ids = trials.loc[[run.relative(c) == relative for c in trials["checkpoint"]], "trial_id"]
            scored = leaderboard.tests(run)
            scored = scored[scored["trial_id"].isin(list(ids)) & scored["temperature"].notna()]
            if len(scored):
                return float(scored["temperature"].iloc[0])
    return float(checkpoint.read_calibration(location).get("temperature", 1.0))


@register("network", recognise=lambda location: True)
def _network(location: str, recognised: bool, *, device: Device, run: RunFolder | None,
             temperature: float | None) -> Trained:
    run = run or RunFolder.enclosing(location)  # the run its row came from, else found above the checkpoint
    temperature = fitted_temperature(location, run) if temperature is None else temperature
    return load_network(location, device=device, run=run, temperature=temperature)


@register("folds", recognise=checkpoint.folds_of)  # how many folds its meta.json names (0: none)
def _folds(location: str, folds: int, *, device: Device, run: RunFolder | None, temperature: float | None) -> Trained:
    run = run or RunFolder.enclosing(location)
    temperature = fitted_temperature(location, run) if temperature is None else temperature
    # the folds are calibrated together, as the trial: each member as it is (1.0)
    members = [load(checkpoint.fold_location(location, f), device=device, run=run, temperature=1.0)
               for f in range(folds)]
    return FoldModel(members, location, temperature=temperature)


@register("ensemble", recognise=lambda location: uris.split_last(location)[1] == runfolder.ENSEMBLE)
def _ensemble(location: str, recognised: bool, *, device: Device, run: RunFolder | None,
              temperature: float | None) -> Trained:
    run = run or RunFolder.existing(uris.split_last(location)[0])
    record = EnsembleRecord.from_json(run.read_text(runfolder.ENSEMBLE))
    # each member with the temperature the ensemble was selected with, loaded as whatever it is
    members = [load(run.located(member), device=device, run=run, temperature=t)
               for member, t in zip(record.checkpoints, record.temperatures)]
    if temperature is not None:  # the record is frozen: a copy with this temperature
        record = dataclasses.replace(record, temperature=temperature)
    return EnsembleModel(members, record, run.uri())


@register("adapted", recognise=adapted.recognised)  # its adapted.json, read once
def _adapted(location: str, record: adapted.AdaptedRecord, *, device: Device, run: RunFolder | None,
             temperature: float | None) -> Trained:
    run = run or RunFolder.enclosing(location)
    if run is None:
        raise checkpoint.CheckpointError(f"{location}: an adapted model is read inside its run folder "
                                         "(adapted/<name>/<per_class>/<model>), where its source is")
    # the source as the run holds it now (its fitted temperatures), then the adapted tensors put in
    source = load(run.located(record.source), device=device, run=run)
    return adapted.assemble(source, record, location, temperature=temperature)


def load_ensemble(run: RunFolder, *, device: Device = None) -> EnsembleModel:
    """A run's weighted ensemble (written by its final evaluation), its members loaded from where the run is now."""
    if not run.exists(runfolder.ENSEMBLE):
        raise checkpoint.CheckpointError(f"{run.uri()}: no ensemble ({runfolder.ENSEMBLE}); the final evaluation "
                                         "builds one when evaluate.ensemble is 2 or more and two trials have checkpoints")
    return load(run.uri(run.file(runfolder.ENSEMBLE)), device=device, run=run)


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


def _run_of(location: str | Path) -> RunFolder | None:
    """The run folder a location is (or whose leaderboard file it is), or None (a checkpoint's folder)."""
    try:
        return leaderboard.run_folder(location)
    except RunFolderError:
        return None


def load_model(source, *, device: Device = None, trial: str | None = None) -> Trained:
    """The trained model of a checkpoint: a folder (a leaderboard's ``checkpoint_uri``), the
    ``checkpoint.pt`` in it, a leaderboard row, or a run folder (its best trial, or ``trial``;
    ``trial="ensemble"``: the weighted ensemble of its best trials), wherever the run is now. A
    cross-validated trial's checkpoint gives its ``FoldModel``; every kind follows one protocol
    (``leuktune.trained.base``).

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
    if isinstance(source, (pd.Series, dict)):  # a leaderboard row
        row = source
        source = row.get("checkpoint_uri")
        if source is None or source != source:
            raise checkpoint.CheckpointError(
                f"trial {row.get('trial_id')} has no checkpoint (status {row.get('status')!r})")
        if pd.notna(row.get("temperature", None)) and row.get("trial_id") != ENSEMBLE_ID:
            temperature = float(row["temperature"])
    return load(source, device=device, run=run, temperature=temperature)
