"""A cross-validated trial (``search.cv: K``): K models of one configuration, each holding out
one fold of the training and validation images (leuktune.data.folds), trained side by side in
the trial's process and judged as one.

Each epoch every fold trains and validates on its held-out images through the same per-worker
loop as any trial (``leuktune.training.loop.epochs``); the trial then reports the mean over folds
(what ASHA and the searcher judge), its standard error and the folds' spread, and keeps the epoch
whose mean is best as ``train.keep`` says. Its checkpoint is a folder of the folds' own
checkpoints (``fold_0/`` ...), all at that epoch, with a ``meta.json`` of its own: ``load_model``
serves the K models as one (their average, ``leuktune.trained.FoldModel``). A trial killed and
restarted resumes every fold from its part of the last checkpoint; a fold that fails fails the
trial, naming the fold. A fold whose checkpoint could not be written leaves the epoch without a
checkpoint (``checkpoint_error`` names the fold), as a trial's failed write does: a trial's
checkpoint always holds every fold, so a resume keeps the folds in step.

With ``search.cv: sites`` the folds are the training sites (leuktune.data.folds.site_folds): the
mean over held-out sites is the trial's ``val_*``, the worst site its ``val_*_worst``, and each
site's figures travel with the report (``val_sites``) to the history and ``sites.parquet``.

The folds run one after another: a cross-validated search is for small sets, where a fold's
epoch takes seconds and a cluster's parallelism is better spent on concurrent trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.config.search import SITES
from leuktune.data.folds import dealt, training_sites
from leuktune.errors import LeuktuneError
from leuktune.metrics import METRICS, WORST, mode
from leuktune.results import EpochReport
from leuktune.training import checkpoint
from leuktune.training.loop import epochs
from leuktune.training.phases import Phases
from leuktune.training.session import checkpoint_folder
from leuktune.training.trial import Trial, build
from leuktune.training.verdict import Kept, Verdict, judge, kept_from

class FoldError(LeuktuneError, RuntimeError):
    """A fold of a cross-validated trial failed; the message names the fold and the epoch."""


class _Stored:
    """A folder to resume from, as a Ray ``Checkpoint`` hands it out (``as_directory``)."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        yield str(self.folder)


class FoldSession:
    """What one fold's loop sees as its session: the trial's rank, device and node; its own part
    of the trial's checkpoint to resume from; and a report that keeps the epoch's result and
    copies its checkpoint into the trial's checkpoint being assembled (``staging``)."""

    def __init__(self, session, fold: int, resumed: str | None):
        self._session, self.fold = session, fold
        self.rank, self.world_size, self.device = session.rank, session.world_size, session.device
        part = Path(resumed) / checkpoint.FOLD.format(fold) if resumed else None
        self._resume = part if part is not None and (part / checkpoint.FILE).exists() else None
        self.staging: Path | None = None
        self.last: EpochReport | None = None
        self.stored = False  # this epoch's checkpoint of the fold is in ``staging``

    def node(self) -> dict[str, str]:
        return self._session.node()

    def checkpoint(self):
        return _Stored(self._resume) if self._resume else None

    def wrap(self, model):
        return self._session.wrap(model)

    def report(self, result: dict, folder: str | None) -> None:
        self.last, self.stored = EpochReport.from_result(result), False
        if folder is None or self.staging is None:
            return
        try:
            shutil.copytree(folder, self.staging / checkpoint.FOLD.format(self.fold), dirs_exist_ok=True)
            self.stored = True
        except OSError as err:  # a full disk, say: the trial's epoch goes without a checkpoint
            self.last = dataclasses.replace(self.last, checkpoint_error=f"{type(err).__name__}: {err}")


def fold_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """A fold's configuration: a checkpoint at every validated epoch (the trial keeps all folds at
    the epoch its mean chose, and resumes all from one epoch); patience is the trial's, on the mean."""
    train = cfg.train.model_copy(update={"checkpoint_every": 1, "patience": 0})
    return cfg.model_copy(update={"train": train})


def run_folds(cfg: ExperimentConfig, data: CachedDataset, session, launched_at: float | None = None) -> None:
    """Train the K folds of a cross-validated trial epoch by epoch; report each validated epoch's
    mean over folds with, when due, the checkpoint of every fold."""
    phases = Phases(launched_at)
    folds = dealt(data, cfg.search.cv, cfg.data.split.seed)
    k, sites = len(folds), training_sites(data) if cfg.search.cv == SITES else None
    resumed = session.checkpoint()
    with resumed.as_directory() if resumed else contextlib.nullcontext(None) as folder:
        sessions = [FoldSession(session, f, folder) for f in range(k)]
        trials = [_fold(f, k, lambda: build(fold_config(cfg), folds[f], sessions[f], phases))
                  for f in range(k)]
        kept = _resumed_kept(folder)
    steps = [epochs(trial) for trial in trials]
    resumed_from = reported = trials[0].state.epoch
    while True:
        with checkpoint_folder() as staging:
            for fold_session in sessions:
                fold_session.staging, fold_session.last = Path(staging), None
            stepped = [_fold(f, k, lambda: next(steps[f], None)) for f in range(k)]
            if any(step is None for step in stepped):  # every fold ended with the last epoch
                return
            epoch = stepped[0][0]
            if all(verdict is None for _, verdict in stepped):  # an epoch not validated
                continue
            report, verdict = combined(cfg, trials[0], [s.last for s in sessions], kept, reported, resumed_from,
                                       phases, sites)
            due = verdict.checkpoint_due and not report.diverged
            unwritten = _unwritten(sessions) if due else None
            if unwritten:
                due, report = False, dataclasses.replace(report, checkpoint_error=unwritten)
                print(f"[leuktune] WARNING: the checkpoint of epoch {epoch} could not be written ({unwritten}); "
                      f"the trial goes on, resumable from its last checkpoint", flush=True)
            if due:
                checkpoint.write_meta(staging, {"epoch": epoch, "kept": dataclasses.asdict(kept),
                                                "metrics": report.to_result(), "folds": k})
            session.report(report.to_result(), staging if due else None)
            reported = epoch
            if verdict.finished:
                return


def _unwritten(sessions: list[FoldSession]) -> str | None:
    """Why the trial's checkpoint of this epoch would miss a fold's part (None: every fold's is there)."""
    k = len(sessions)
    missing = [f"fold {s.fold + 1} of {k}: {s.last.checkpoint_error or 'no checkpoint reported'}"
               for s in sessions if not s.stored]
    return "; ".join(missing) or None


def _fold(fold: int, k: int, work):
    """``work()``, its failure re-raised naming the fold (the trial fails with it)."""
    try:
        return work()
    except Exception as err:  # noqa: BLE001 - re-raised with the fold named
        raise FoldError(f"fold {fold + 1} of {k} failed: {type(err).__name__}: {err}") from err


def _resumed_kept(folder: str | None) -> Kept:
    """The trial's kept epoch so far, from the checkpoint it resumes from (a new Kept without one)."""
    meta = Path(folder) / checkpoint.META if folder else None
    if meta is None or not meta.exists():
        return Kept()
    return kept_from(json.loads(meta.read_text()))


def combined(cfg: ExperimentConfig, first: Trial, reports: list[EpochReport], kept: Kept, since: int,
             resumed_from: int, phases: Phases, sites: list[str] | None = None) -> tuple[EpochReport, Verdict]:
    """The trial's report of an epoch from its folds' reports: each val metric's mean over folds,
    the mean's standard error (their standard deviation / sqrt(K)) and their standard deviation;
    the folds' confusion matrices summed (every training and validation image once, predicted by
    the model that did not train on it). Folds that are ``sites`` add each metric at its worst
    site and each site's figures. The search metric (a mean, or a worst site's) is judged as a
    trial's score is (``kept`` is updated). A fold that diverged makes the trial diverge."""
    k, epoch = len(reports), reports[0].epoch
    diverged = any(r.diverged for r in reports)
    sign = 1 if cfg.search.mode == "max" else -1
    values = {m: np.array([r.val.get(m, math.nan) for r in reports], dtype=float) for m in METRICS}
    mean = {} if diverged else {m: float(np.mean(v)) for m, v in values.items()}
    spread = {} if diverged else {m: float(np.std(v, ddof=1)) for m, v in values.items()}
    worst = {} if diverged or not sites else {m: _worst(m, v) for m, v in values.items()}
    figures = {**mean, **{f"{m}{WORST}": v for m, v in worst.items()}}
    score = sign * figures.get(cfg.search.metric.removeprefix("val_"), math.nan)
    validation = reports[0].validation
    verdict = judge(cfg.train, kept, epoch, validation, since, score, diverged,
                    loss=mean.get("loss", math.nan), ece=mean.get("ece", math.nan))
    matrices = [r.val_confusion_matrix for r in reports]
    report = EpochReport(
        epoch=epoch, train_loss=float(np.mean([r.train_loss for r in reports])),
        # the trial's pace over all its folds
        train_images_per_s=k / sum(1 / max(r.train_images_per_s, 1e-9) for r in reports),
        lr=reports[0].lr, epoch_seconds=sum(r.epoch_seconds for r in reports), validation=validation,
        val=mean, val_se={m: s / math.sqrt(k) for m, s in spread.items()}, val_folds=k, val_fold_std=spread,
        val_worst=worst, val_sites={} if diverged or not sites else
        {site: {"val": dict(r.val), "val_se": dict(r.val_se), "val_images": r.val_images}
         for site, r in zip(sites, reports)},
        val_confusion_matrix=None if diverged or None in matrices else np.sum(matrices, axis=0).tolist(),
        val_images=sum(r.val_images for r in reports),
        inference_ms=float(np.mean([r.inference_ms for r in reports])),
        diverged=diverged, early_stopped=verdict.early_stopped, finished=verdict.finished,
        kept_value=sign * kept.score if kept.epoch else math.nan, kept_epoch=kept.epoch,
        newly_kept_epoch=epoch if verdict.newly_kept else 0, resumed_from_epoch=resumed_from,
        facts=first.facts, launched_at=phases.launched_at, loop_started_at=phases.started_at,
        phase_seconds=phases.rounded())
    return report, verdict


def _worst(metric: str, values: np.ndarray) -> float:
    """The worst site's value of a metric (the lowest accuracy, the highest loss); a site where it
    is undefined (ROC-AUC without one of the classes) is left out, NaN where every site's is."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan
    return float(finite.min() if mode(metric) == "max" else finite.max())
