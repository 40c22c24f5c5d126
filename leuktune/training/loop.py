"""The per-worker PyTorch loop that every trial runs, whoever launched it.

It reads a concrete ``ExperimentConfig`` and the shared ``CachedDataset``; it never parses
YAML nor decodes an image. Each epoch it trains on its shard of the training split; each
validated epoch (``train.validate_every``) it scores the whole validation split and reports an
``EpochReport`` (leuktune.results), with a checkpoint when one is due, through its session
(leuktune.training.session); which epoch it keeps and when it ends is leuktune.training.verdict's
to say. A trial restarted after a failure resumes from its latest checkpoint (leuktune.training.trial).
A loss that turns NaN or infinite ends the trial as diverged. A trial whose backbone is frozen trains
its head on the backbone's features, computed once and shared (leuktune.training.features); a probe
head is fitted on them once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Iterator

import numpy as np
import torch

from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.results import EpochReport
from leuktune.training import checkpoint
from leuktune.training.epoch import Validation, fit_head, refresh_batchnorm, train_epoch, validate
from leuktune.training.phases import Phases
from leuktune.training.session import TrainSession, checkpoint_folder
from leuktune.training.trial import Trial, build
from leuktune.training.verdict import Verdict, judge


def epoch_report(trial: Trial, epoch: int, trained: dict[str, float], validation: Validation | None,
                 seconds: float, resumed_from: int, since: int) -> tuple[EpochReport, Verdict]:
    """The epoch's report and verdict; ``validation`` None when the trial diverged,
    ``resumed_from`` the checkpoint's epoch this run of the trial began after, ``since`` the
    epoch reported before this one."""
    cfg = trial.cfg
    diverged = validation is None
    sign = 1 if cfg.search.mode == "max" else -1
    scores = validation.scores if validation else {}
    score = sign * scores.get(cfg.search.metric.removeprefix("val_"), math.nan)
    verdict = judge(cfg.train, trial.state.kept, epoch, trial.state.validations, since, score, diverged,
                    loss=scores.get("loss", math.nan), ece=scores.get("ece", math.nan))
    kept = trial.state.kept
    report = EpochReport(
        epoch=epoch, train_loss=trained["train_loss"], train_images_per_s=trained["train_images_per_s"],
        lr=trained["lr"], epoch_seconds=seconds, validation=trial.state.validations, val=scores,
        val_se=validation.standard_errors if validation else {},
        val_confusion_matrix=validation.confusion_matrix if validation else None,
        val_images=validation.images if validation else 0,
        inference_ms=validation.inference_ms if validation else math.nan,
        diverged=diverged, early_stopped=verdict.early_stopped, finished=verdict.finished,
        kept_value=sign * kept.score if kept.epoch else math.nan, kept_epoch=kept.epoch,
        # Ray keeps the checkpoint with the largest value: the latest newly kept epoch. Other
        # checkpoints (every N epochs, for resuming) get 0, so a tie never evicts the kept one.
        newly_kept_epoch=epoch if verdict.newly_kept else 0,
        resumed_from_epoch=resumed_from,
        facts=trial.facts, launched_at=trial.phases.launched_at, loop_started_at=trial.phases.started_at,
        phase_seconds=trial.phases.rounded())
    return report, verdict


def checkpoint_state(trial: Trial, snapshot: bool = False) -> dict[str, Any]:
    """The training state as it is now, with what a trained model needs to be used on its own:
    what ``checkpoint.pt`` holds. ``snapshot``: copied to host memory, for a write that runs
    while the training goes on changing the state."""
    network, state = trial.state.network, trial.state.state_dict()
    return {**(checkpoint.on_host(state) if snapshot else state), "class_names": trial.data.class_names,
            "normalization": {"mean": network.backbone.mean, "std": network.backbone.std},
            "data_fingerprint": trial.data.fingerprint, "experiment": trial.cfg.to_dict(),
            "stain_reference": _tensor_or_none(trial.data.stain_reference)}


def _tensor_or_none(pixels: np.ndarray | None) -> torch.Tensor | None:
    # a copy: the pixels may be a read-only view of the object store's
    return None if pixels is None else torch.tensor(pixels)


def _written(trial: Trial, writing: checkpoint.BackgroundWrite | None, folder: str) -> str | None:
    """The epoch's checkpoint file, waited for when it is being written in the background, else
    written now; the write's error as ``Type: message`` if it failed."""
    with trial.phases("checkpoint"):  # on a GPU: what is left of the write once validation is done
        started = time.perf_counter()
        try:
            if writing is None:
                checkpoint.write_state(folder, checkpoint_state(trial))
            else:
                writing.wait()
            return None
        except Exception as err:  # noqa: BLE001 - reported with the epoch; the trial goes on
            return f"{type(err).__name__}: {err}"
        finally:
            trial.phases.seconds["checkpoint_write"] += (writing.seconds if writing is not None
                                                         else time.perf_counter() - started)


def writes_during_validation(trial: Trial) -> bool:
    """Rank 0 on a GPU: validation leaves the CPU cores free for the write."""
    return trial.session.rank == 0 and trial.setup.device.type == "cuda"


def _start_write(trial: Trial, folder: str) -> checkpoint.BackgroundWrite:
    with trial.phases("checkpoint"):  # the copy of the state to host memory
        return checkpoint.BackgroundWrite(folder, checkpoint_state(trial, snapshot=True))


def validate_and_report(trial: Trial, epoch: int, trained: dict[str, float], started: float, resumed_from: int,
                        since: int) -> Verdict:
    """Validate the epoch, judge it and report it, with its checkpoint (rank 0's) when one is due.

    On a GPU, the state is copied to host memory and ``checkpoint.pt`` written in a thread while
    the GPU scores the validation split (whether a checkpoint is due is known only after); the
    report waits for what is left of the write. On the CPU the write would take cores from
    validation (measured: no gain), so it is written after, only when due. A failed write is
    reported with the epoch (``checkpoint_error``) and no checkpoint goes with it: the trial's
    resume point stays its last good checkpoint."""
    trial.state.validations += 1
    rank0 = trial.session.rank == 0
    with trial.phases("validate"):
        refresh_batchnorm(trial, epoch)  # before the checkpoint's copy: it keeps the statistics validated
    with checkpoint_folder() as folder:
        writing = _start_write(trial, folder) if writes_during_validation(trial) else None
        with trial.phases("validate"):
            validation = validate(trial)  # None when its predictions are not numbers
        report, verdict = epoch_report(trial, epoch, trained, validation, time.perf_counter() - started,
                                       resumed_from, since)
        due = rank0 and verdict.checkpoint_due
        error = _written(trial, writing, folder) if due or writing is not None else None
        if due and error is None:
            checkpoint.write_meta(folder, {"epoch": epoch, "kept": dataclasses.asdict(trial.state.kept),
                                           "metrics": report.to_result()})
            checkpoint.write_val_predictions(folder, validation.predictions)  # due: not diverged
        elif due:
            report = dataclasses.replace(report, checkpoint_error=error)
            print(f"[leuktune] WARNING: the checkpoint of epoch {epoch} could not be written ({error}); "
                  f"the trial goes on, resumable from its last checkpoint", flush=True)
        with trial.phases("report"):  # Ray copies the checkpoint to storage here
            trial.session.report(report.to_result(), folder if due and error is None else None)
    return verdict


def epochs(trial: Trial) -> Iterator[tuple[int, Verdict | None]]:
    """Train the trial epoch by epoch from where it stands (its checkpoint's epoch when resumed);
    validate, save and report the epochs that ``train.validate_every`` names (and a diverged one
    at once). Yields after each epoch: its number and verdict (None for an epoch not validated);
    ends with the trial. One epoch at a time, so that a cross-validated trial steps its folds
    together (leuktune.training.folds)."""
    cfg, phases = trial.cfg, trial.phases
    if trial.state.network.head.fitted:
        yield from _fitted(trial)
        return
    resumed_from = reported = trial.state.epoch
    started = None  # when the first epoch since the last report began: a report's seconds cover them all
    for epoch in range(resumed_from + 1, cfg.train.epochs + 1):
        if started is None:
            started = time.perf_counter()
        with phases("train"):
            trained = train_epoch(trial, epoch)
        trial.state.epoch = epoch
        if not math.isfinite(trained["train_loss"]):  # nothing left to validate
            trial.state.validations += 1
            report, verdict = epoch_report(trial, epoch, trained, None, time.perf_counter() - started,
                                           resumed_from, reported)
            with phases("report"):
                trial.session.report(report.to_result(), None)
            yield epoch, verdict
            return
        if not cfg.train.validated(epoch):
            yield epoch, None
            continue
        verdict = validate_and_report(trial, epoch, trained, started, resumed_from, reported)
        reported, started = epoch, None
        yield epoch, verdict
        if verdict.finished:
            return


def _fitted(trial: Trial) -> Iterator[tuple[int, Verdict | None]]:
    """A probe's trial: fitted once on the cached features, then validated and reported as its
    last epoch (it has no schedule to follow)."""
    last = trial.cfg.train.epochs
    if trial.state.epoch >= last:  # restarted after its fit was saved
        return
    started = time.perf_counter()
    with trial.phases("train"):
        trained = fit_head(trial)
    trial.state.epoch = last
    yield last, validate_and_report(trial, last, trained, started, 0, 0)


def run_loop(cfg: ExperimentConfig, data: CachedDataset, session, launched_at: float | None = None) -> None:
    """Build, resume if restarted, then train to the trial's end (``epochs``)."""
    for _ in epochs(build(cfg, data, session, Phases(launched_at))):
        pass


def train_loop_per_worker(loop_config: dict) -> None:
    """The entry point of a Ray Train worker (``TorchTrainer``)."""
    run_loop(ExperimentConfig.model_validate(loop_config["experiment"]), loop_config["data"], TrainSession(),
             launched_at=loop_config.get("launched_at"))
