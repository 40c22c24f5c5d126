"""The per-worker PyTorch loop that every trial runs, whoever launched it.

It reads a concrete ``ExperimentConfig`` and the shared ``CachedDataset``; it never parses
YAML nor decodes an image. Each epoch it trains on its shard of the training split; each
validated epoch (``train.validate_every``) it scores the whole validation split and reports an
``EpochReport`` (leuktune.results), with a checkpoint when one is due, through its session
(leuktune.training.session). A trial restarted
after a failure resumes from its latest checkpoint. A loss that turns NaN or infinite ends
the trial as diverged. A trial whose backbone is frozen trains its head on the backbone's
features, computed once and shared (leuktune.training.features); a probe head is fitted on them once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from timm.utils import ModelEmaV3

from leuktune.config import ExperimentConfig, TrainConfig
from leuktune.data.augment import augment_batch
from leuktune.data.cache import CachedDataset
from leuktune.models.classifier import Classifier, build_model, count_parameters
from leuktune.results import EpochReport, TrialFacts
from leuktune.training import checkpoint
from leuktune.training import features as frozen
from leuktune.training.balance import class_weights
from leuktune.training.device import BatchSource, DeviceSetup
from leuktune.training.epoch import Validation, batch_bounds, fit_head, refresh_batchnorm, train_epoch, validate
from leuktune.training.optim import make_optimizer, make_scheduler
from leuktune.training.phases import Phases
from leuktune.training.session import TrainSession, checkpoint_folder


@dataclass
class Best:
    """The epoch a trial keeps so far (``train.keep``), with its search metric signed so that
    larger is better, and its validation loss and calibration error, which break ties."""

    score: float = -math.inf
    epoch: int = 0
    validation: int = 0  # which validation it was
    loss: float = math.inf
    ece: float = math.inf
    # the highest score so far and the validation that reached it: patience counts from there (a
    # tie won on the loss, or keep: last, keeps a later epoch, but a metric that stopped rising has
    # still stopped)
    peak: float = -math.inf
    raised_at: int = 0

    def update(self, score: float, epoch: int, validation: int, loss: float = math.nan, ece: float = math.nan,
               keep: str = "best") -> bool:
        """Whether the epoch replaces the kept one: NaN scores never do. ``best``: a higher score,
        or as high and a lower validation loss, then a lower calibration error, then simply later
        (on a small validation split the metric moves in steps of one image: the first epoch to
        reach the top step is often an undertrained one, and a later one as high has trained
        longer for it); ``last``: every epoch; ``first_best``: only a strictly higher score (what
        leuktune kept before, for comparisons)."""
        if math.isnan(score):
            return False
        if score > self.peak:
            self.peak, self.raised_at = score, validation
        if keep == "first_best":
            better = score > self.score
        elif keep == "best":
            better = _rank_key(score, loss, ece) >= _rank_key(self.score, self.loss, self.ece)
        else:
            better = True
        if better:
            self.score, self.epoch, self.validation = score, epoch, validation
            self.loss, self.ece = loss, ece
        return better


def _rank_key(score: float, loss: float, ece: float) -> tuple[float, float, float]:
    """Larger is better: the score, then the lower loss, then the lower calibration error (unknown = worst)."""
    return score, -(math.inf if math.isnan(loss) else loss), -(math.inf if math.isnan(ece) else ece)


@dataclass(kw_only=True)
class TrainingState:
    """What changes as a trial trains, and what its checkpoint keeps to resume it.

    ``network`` is the classifier the optimiser moves; ``ema`` its moving average of weights
    (``train.ema``), which validation scores and checkpoints keep as the model when set."""

    network: Classifier
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    best: Best
    epoch: int = 0  # the last epoch trained (0 before the first)
    validations: int = 0  # the validated epochs so far (ASHA's and patience's clock)

    @property
    def scored(self) -> torch.nn.Module:
        """The weights that validation scores and checkpoints keep: the moving average if any."""
        return self.ema.module if self.ema is not None else self.network

    def state_dict(self) -> dict[str, Any]:
        """Everything but the best so far, which is known only once the epoch is validated (it
        goes with the checkpoint's meta), while this may be written before."""
        # "model" is what a trained model loads (leuktune.load_model): the scored weights. With a
        # moving average the trained weights go under "network", for resuming.
        state = {"model": self.scored.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "epoch": self.epoch, "validations": self.validations}
        if self.ema is not None:
            state["network"] = self.network.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state.get("network", state["model"]))
        if self.ema is not None:
            self.ema.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        # Checkpoints from before train.validate_every validated every epoch.
        self.validations = int(state.get("validations", self.epoch))
        # Checkpoints from before validate_every, and from before ties were broken, lack the later fields.
        best = {"validation": state["best"]["epoch"], **state["best"]}
        self.best = Best(**{"peak": best["score"], "raised_at": best["validation"], **best})


@dataclass(frozen=True, kw_only=True)
class Trial:
    """What a trial's epochs share: its fixed setup, and ``state``, the part that trains."""

    cfg: ExperimentConfig
    data: CachedDataset
    session: Any  # leuktune.training.session: rank, world size, device, checkpoint, report, wrap
    source: BatchSource  # batches of images and labels, on the device
    setup: DeviceSetup
    class_weights: torch.Tensor | None
    bounds: list[tuple[int, int]]  # each batch's rows of the worker's shard
    facts: TrialFacts  # about the model and device, reported with every epoch
    phases: Phases
    state: TrainingState
    # what the training step calls (the head alone on cached features): DDP-wrapped, compiled if asked
    wrapped: torch.nn.Module
    features: frozen.FeaturePlan | None = None  # a frozen backbone's cached features (leuktune.training.features)

    def model_input(self, batch: torch.Tensor, training: bool) -> torch.Tensor:
        """A batch from ``source`` as the model (or, on cached features, the head) takes it:
        images normalised, augmented when training; features of one view, drawn when training."""
        if self.features is not None:
            return frozen.training_view(batch) if training else frozen.plain_view(batch)
        x = self.setup.to_unit(batch)
        if training:
            x = augment_batch(x, self.cfg.train.augment, self.cfg.train.augment_strength)
        return self.setup.model_input(x)

    def scored_part(self, module: torch.nn.Module) -> torch.nn.Module:
        """What ``model_input``'s batches go through: the classifier, or its head on cached features."""
        return module.head if self.features is not None else module

    @property
    def shard_rows(self) -> int:
        """Training rows per worker: equal shards keep DDP's collective calls in step."""
        return len(self.data.indices("train")) // self.session.world_size


def build(cfg: ExperimentConfig, data: CachedDataset, session, phases: Phases) -> Trial:
    """Model, optimiser, schedule and device for a trial's first epoch, resumed from the latest
    checkpoint when the trial restarts after a failure, then wrapped for data-parallel
    training (and compiled when asked)."""
    with phases("data"):
        images = data.pixels()  # zero-copy view of the node's shared copy
    with phases("build"):
        train = cfg.train
        torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
        torch.manual_seed(train.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        network = build_model(cfg.model, data.num_classes, cfg.data.image_size)
        params, trainable = count_parameters(network)
        setup = DeviceSetup.create(session.device, network.backbone.mean, network.backbone.std, train)
        facts = TrialFacts(unfreeze_depth_effective=network.unfreeze_depth, stage_groups=len(network.backbone.groups),
                           backbone_activation=network.backbone.activation, backbone_weights=network.backbone.weights,
                           params=params, trainable_params=trainable, workers=session.world_size, device=setup.name,
                           precision=setup.precision, **session.node())
        network = setup.prepare(network)
    with phases("features"):
        plan = frozen.plan(cfg, network, data, setup, echo=_echo(session))
        if plan is not None:
            cached = frozen.shared(plan, frozen.key(plan, network, data, setup),
                                   lambda view: frozen.compute(plan, network, images, setup, 2 * train.batch_size, view),
                                   echo=_echo(session))
            features = frozen.ViewStack(cached.views)
            facts = dataclasses.replace(facts, frozen_features=cached.how, feature_views=plan.views,
                                        feature_views_computed=cached.computed)
    with phases("build"):
        bounds = batch_bounds(len(data.indices("train")) // session.world_size,
                              max(1, train.batch_size // session.world_size))
        optimizer = make_optimizer(network, train)
        state = TrainingState(
            network=network,
            # Decay warmed up from 0: short searches average over what they have, not over the init.
            # (a fitted probe takes no steps to average)
            ema=(ModelEmaV3(network, decay=train.ema, use_warmup=True) if train.ema and not network.head.fitted
                 else None),
            optimizer=optimizer, scheduler=make_scheduler(optimizer, train, len(bounds)),
            scaler=torch.amp.GradScaler(setup.device.type, enabled=setup.amp == torch.float16), best=Best())
        weights = (torch.from_numpy(class_weights(data.labels[data.indices("train")], data.num_classes))
                   .to(setup.device) if train.class_balance == "weighted_loss" else None)
        inputs = images if plan is None else features
        resident = BatchSource.fits(inputs, setup.device, cfg.resources.gpus_per_worker)
        source = (BatchSource(images, data.labels, setup.device, resident=resident) if plan is None
                  else frozen.FeatureSource(features, plan.rows, data.labels, setup.device, resident=resident))
    with phases("restore"):
        resumed = session.checkpoint()
        if resumed:
            with resumed.as_directory() as folder:
                state.load_state_dict(checkpoint.load(folder, setup.device))
        # a probe is fitted, not stepped: nothing to synchronise (DDP refuses a module with nothing to train)
        wrapped = network.head if network.head.fitted else session.wrap(network if plan is None else network.head)
        if train.compile:
            wrapped = torch.compile(wrapped)
    return Trial(cfg=cfg, data=data, session=session, source=source, setup=setup, class_weights=weights,
                 bounds=bounds, facts=facts, phases=phases, state=state, wrapped=wrapped, features=plan)


def _echo(session) -> Callable[[str], None]:
    """Lines for the trial's log, from its first worker only."""
    return (lambda line: print(line, flush=True)) if session.rank == 0 else (lambda line: None)


@dataclass(frozen=True)
class Verdict:
    """What an epoch's score means for the trial."""

    improved: bool  # the epoch the trial keeps from now on (train.keep: a new best, or each epoch for last)
    early_stopped: bool  # train.patience validated epochs without a higher search metric
    finished: bool  # the trial ends here: its last epoch, patience, or diverged
    checkpoint_due: bool  # a new best, the trial's end, or train.checkpoint_every epochs on


def judge(train: TrainConfig, best: Best, epoch: int, validation: int, since: int, score: float,
          diverged: bool, loss: float = math.nan, ece: float = math.nan) -> Verdict:
    """The verdict on ``epoch``, the trial's ``validation``-th validated one, reported after epoch
    ``since``, whose search metric, signed so that larger is better, is ``score``, and validation
    loss and calibration error ``loss`` and ``ece`` (the tie-breaks); ``best`` is updated with it
    as ``train.keep`` says. Patience counts validated epochs; checkpoint_every counts epochs (a
    checkpoint at the first validated epoch on or after each multiple)."""
    improved = not diverged and best.update(score, epoch, validation, loss, ece, keep=train.keep)
    early = not diverged and bool(train.patience) and validation - best.raised_at >= train.patience
    finished = diverged or early or epoch == train.epochs
    every = train.checkpoint_every
    due = not diverged and (improved or finished or epoch // every > since // every)
    return Verdict(improved=improved, early_stopped=early, finished=finished, checkpoint_due=due)


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
    verdict = judge(cfg.train, trial.state.best, epoch, trial.state.validations, since, score, diverged,
                    loss=scores.get("loss", math.nan), ece=scores.get("ece", math.nan))
    best = trial.state.best
    report = EpochReport(
        epoch=epoch, train_loss=trained["train_loss"], train_images_per_s=trained["train_images_per_s"],
        lr=trained["lr"], epoch_seconds=seconds, validation=trial.state.validations, val=scores,
        val_se=validation.standard_errors if validation else {},
        val_confusion_matrix=validation.confusion_matrix if validation else None,
        val_images=validation.images if validation else 0,
        inference_ms=validation.inference_ms if validation else math.nan,
        diverged=diverged, early_stopped=verdict.early_stopped, finished=verdict.finished,
        best_value=sign * best.score if best.epoch else math.nan, best_epoch=best.epoch,
        # Ray keeps the checkpoint with the largest value: the latest new best. Other
        # checkpoints (every N epochs, for resuming) get 0, so a tie never evicts the best.
        improved_epoch=epoch if verdict.improved else 0,
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
            checkpoint.write_meta(folder, {"epoch": epoch, "best": dataclasses.asdict(trial.state.best),
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
