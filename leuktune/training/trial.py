"""A trial as its epochs see it: the fixed setup (config, data, device, batches, facts) and the
state that trains (network, moving average, optimiser, schedule, the kept epoch), built once per
worker and resumed from the latest checkpoint when the trial restarts after a failure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from timm.utils import ModelEmaV3

from leuktune.config import ExperimentConfig
from leuktune.data.augment import augment_train
from leuktune.data.cache import CachedDataset
from leuktune.models.classifier import Classifier, build_model, count_parameters
from leuktune.results import TrialFacts
from leuktune.training import checkpoint
from leuktune.training import features as frozen
from leuktune.training.balance import class_weights
from leuktune.training.device import BatchSource, DeviceSetup
from leuktune.training.optim import make_optimizer, make_scheduler
from leuktune.training.phases import Phases
from leuktune.training.verdict import Kept, kept_from


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
    kept: Kept  # the epoch the trial keeps so far (train.keep)
    epoch: int = 0  # the last epoch trained (0 before the first)
    validations: int = 0  # the validated epochs so far (ASHA's and patience's clock)

    @property
    def scored(self) -> torch.nn.Module:
        """The weights that validation scores and checkpoints keep: the moving average if any."""
        return self.ema.module if self.ema is not None else self.network

    def state_dict(self) -> dict[str, Any]:
        """Everything but the kept epoch so far, which is known only once the epoch is validated (it
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
        self.kept = kept_from(state)


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
            x = augment_train(x, self.cfg.train)
        return self.setup.model_input(x)

    def scored_part(self, module: torch.nn.Module) -> torch.nn.Module:
        """What ``model_input``'s batches go through: the classifier, or its head on cached features."""
        return module.head if self.features is not None else module

    @property
    def shard_rows(self) -> int:
        """Training rows per worker: equal shards keep DDP's collective calls in step."""
        return len(self.data.indices("train")) // self.session.world_size



def batch_bounds(rows: int, batch_size: int) -> list[tuple[int, int]]:
    """Batches of an epoch, all of one size: a short last batch is dropped (its images come
    round again in another epoch's order), since each new input shape costs the GPU new kernel
    plans (torch.compile a recompilation), and a batch of one cannot train BatchNorm."""
    full = [(s, s + batch_size) for s in range(0, rows - batch_size + 1, batch_size)]
    return full or [(0, rows)]


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
            scaler=torch.amp.GradScaler(setup.device.type, enabled=setup.amp == torch.float16), kept=Kept())
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
