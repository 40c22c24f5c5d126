"""The shapes of a run's results, each with one owner: what an epoch reports
(``EpochReport``), the facts about a trial's model and device that come with it
(``TrialFacts``), how a trial ended (``TrialStatus``), and the record each stage stores: the
search's of a trial (``TrialRecord``, a row of ``trials.parquet``), the final evaluation's of a
model on the test split (``TestFigures``, a row of ``test.parquet``) and of the ensemble
(``EnsembleRecord``, ``ensemble.json``).

The per-worker loop builds an ``EpochReport`` and hands Ray Tune its flat form
(``to_result``: the keys ASHA and Optuna read); in the driver the searcher and the leaderboard
callback read it back with ``EpochReport.from_result``. A field added here reaches every reader,
and ``tests/test_structure.py`` fails until it has a leaderboard or history column or is listed
in ``NOT_STORED`` with the reason.

>>> from leuktune.results import EpochReport, TrialStatus
>>> report = EpochReport(epoch=2, train_loss=0.4, val={"accuracy": 0.9}, finished=True, kept_value=0.9)
>>> result = report.to_result()
>>> result["val_accuracy"], result["finished"]
(0.9, True)
>>> EpochReport.from_result(result).val["accuracy"]
0.9
>>> TrialStatus.of(report, epochs=2, error=None)
(<TrialStatus.COMPLETED: 'completed'>, None)
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from leuktune.metrics import METRICS

NAN = math.nan


class TrialStatus(str, enum.Enum):
    """How a trial ended, as the leaderboard's ``status`` column spells it."""

    COMPLETED = "completed"  # every epoch ran
    STOPPED_EARLY = "stopped_early"  # by ASHA or by train.patience (the row's stopped_by)
    DIVERGED = "diverged"  # its loss or predictions stopped being numbers
    ERROR = "error"  # it raised, or its process died and no restart was left

    @property
    def failed(self) -> bool:
        """A failed trial has no usable score: ranked last, never evaluated, off the Pareto front."""
        return self in (TrialStatus.DIVERGED, TrialStatus.ERROR)

    @classmethod
    def of(cls, last: EpochReport | None, epochs: int, error: str | None) -> tuple[TrialStatus, str | None]:
        """(status, stopped_by) of a trial whose last report is ``last``, out of ``epochs``
        epochs; ``stopped_by`` is ``asha`` or ``patience`` for a trial stopped early."""
        if error:
            return cls.ERROR, None
        if last is not None and last.diverged:
            return cls.DIVERGED, None
        if last is not None and last.epoch >= epochs:
            return cls.COMPLETED, None
        return cls.STOPPED_EARLY, "patience" if last is not None and last.early_stopped else "asha"


# The leaderboard's spelling of the failed statuses, for filtering its ``status`` column.
FAILED = tuple(status.value for status in TrialStatus if status.failed)


@dataclass(frozen=True, kw_only=True)
class TrialFacts:
    """What a trial's model and device are; the same every epoch (the leaderboard keeps the last)."""

    params: int
    trainable_params: int
    unfreeze_depth_effective: int  # the stage groups that train (a request beyond the backbone's is all)
    stage_groups: int
    backbone_activation: str
    workers: int
    device: str
    precision: str
    node_ip: str | None = None  # where it ran: a trial restarted after a lost node names the new one
    node_id: str | None = None
    # a frozen backbone's features cached (leuktune.training.features): "computed" (this trial
    # computed some of its views) or "loaded" (all were cached, or computed by trials beside it);
    # None when the backbone ran on the images every epoch
    frozen_features: str | None = None
    feature_views: int = 0  # the flips and quarter turns cached per image
    feature_views_computed: int = 0  # those this trial computed: its passes of the backbone over the data
    # the pretrained weights its backbone loaded (leuktune.models.provenance): a file's name and the
    # start of its sha256, a Hub id, or "none (random init)"
    backbone_weights: str | None = None


FACTS = tuple(f.name for f in dataclasses.fields(TrialFacts))


@dataclass(frozen=True, kw_only=True)
class EpochReport:
    """One epoch of one trial, as the loop reports it.

    ``val`` holds every metric of ``leuktune.metrics.METRICS`` by name (NaN when the trial
    diverged); ``phase_seconds`` the loop's cumulative seconds per phase so far (by the names of
    ``leuktune.training.phases.PHASES``)."""

    epoch: int
    train_loss: float = NAN
    train_images_per_s: float = NAN
    lr: float = NAN
    epoch_seconds: float = NAN  # the epochs since the last report (train.validate_every), validation included
    validation: int = 0  # the trial's validated epochs so far, this one included (ASHA's time)
    val: Mapping[str, float] = field(default_factory=dict)
    # each val metric's bootstrap standard error (leuktune.metrics.standard_errors): how far apart
    # two epochs or trials must be before the validation split can tell them apart
    val_se: Mapping[str, float] = field(default_factory=dict)
    # a cross-validated trial (search.cv): val is the mean over its folds, val_se the mean's
    # standard error (their standard deviation / sqrt(folds)), val_fold_std their spread
    val_folds: int = 0
    val_fold_std: Mapping[str, float] = field(default_factory=dict)
    # a trial that holds out one lab per fold (search.cv: sites): each metric at its worst held-out
    # site (val_<m>_worst), and each site's own figures: {site: {"val": {...}, "val_se": {...},
    # "val_images": n}} (the history's site rows and sites.parquet; leuktune.leaderboard.held_out)
    val_worst: Mapping[str, float] = field(default_factory=dict)
    val_sites: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    val_confusion_matrix: list[list[int]] | None = None
    val_images: int = 0  # the validation images scored, all workers together
    inference_ms: float = NAN  # validation's time per image
    diverged: bool = False
    early_stopped: bool = False  # by train.patience
    finished: bool = False  # the trial ends with this epoch: its last, patience, or diverged
    # the epoch the trial keeps so far (train.keep: its best, or its last) and its search metric
    # (NaN before the first scored epoch)
    kept_value: float = NAN
    kept_epoch: int = 0
    newly_kept_epoch: int = 0  # this epoch when it became the kept one, else 0 (Ray keeps the largest's checkpoint)
    resumed_from_epoch: int = 0  # the checkpoint's epoch this run of the trial resumed from
    checkpoint_error: str | None = None  # a checkpoint due this epoch could not be written: why
    facts: TrialFacts | None = None
    launched_at: float = NAN  # wall clock: when the trial asked for its workers
    loop_started_at: float = NAN  # wall clock: when the loop began
    phase_seconds: Mapping[str, float] = field(default_factory=dict)

    def to_result(self) -> dict[str, Any]:
        """The flat dict Ray Tune is given (and passes to ASHA, Optuna and the callbacks)."""
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NESTED}
        flat.update({f"val_{m}": self.val.get(m, NAN) for m in METRICS})
        flat.update({f"val_{m}_se": self.val_se.get(m, NAN) for m in METRICS})
        flat.update({f"val_{m}_fold_std": self.val_fold_std.get(m, NAN) for m in METRICS})
        flat.update({f"val_{m}_worst": self.val_worst.get(m, NAN) for m in METRICS})
        # one key, as text: Tune's loggers take flat numbers and text, and sites are the data's names
        flat["val_sites"] = json.dumps(self.val_sites) if self.val_sites else None
        flat.update({f"time_{phase}_s": seconds for phase, seconds in self.phase_seconds.items()})
        if self.facts is not None:
            flat.update(dataclasses.asdict(self.facts))
        return flat

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> EpochReport:
        """A report from Tune's result, or from a stored history row (which keeps fewer fields:
        the others take their defaults). Keys that Tune adds (``training_iteration``, ...) are ignored."""
        simple = {f.name: result[f.name] for f in dataclasses.fields(cls)
                  if f.name not in _NESTED and _present(result.get(f.name))}
        facts = (TrialFacts(**{name: result.get(name) for name in FACTS})
                 if all(name in result for name in FACTS) else None)
        return cls(**simple, facts=facts,
                   val={m: result[f"val_{m}"] for m in METRICS if f"val_{m}" in result},
                   # figures an epoch does not have (a trial's own has no spread over folds) come back absent
                   val_se={m: result[f"val_{m}_se"] for m in METRICS if _present(result.get(f"val_{m}_se"))},
                   val_fold_std={m: result[f"val_{m}_fold_std"] for m in METRICS
                                 if _present(result.get(f"val_{m}_fold_std"))},
                   val_worst={m: result[f"val_{m}_worst"] for m in METRICS if _present(result.get(f"val_{m}_worst"))},
                   val_sites=json.loads(result["val_sites"]) if isinstance(result.get("val_sites"), str) else {},
                   phase_seconds={key[len("time_"):-len("_s")]: value for key, value in result.items()
                                  if key.startswith("time_") and key.endswith("_s")})

    def value(self, name: str) -> Any:
        """A field by its flat name (the search metric, a cost objective): None when absent."""
        return self.to_result().get(name)


# Fields that the flat result spreads over several keys (val_*, val_*_se, val_*_fold_std, val_*_worst, the
# facts, time_*_s) or keeps as text (val_sites).
_NESTED = ("val", "val_se", "val_fold_std", "val_worst", "val_sites", "facts", "phase_seconds")


def _present(value: Any) -> bool:
    """Not a missing value of a stored row (null, or pandas' NaN for a missing integer or flag)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


# Fields of the flat result that neither table stores, and why; every other key has a column.
NOT_STORED = {
    "diverged": "the leaderboard's status says it (diverged)",
    "val_images": "the size of the validation split, which split.parquet holds",
    "early_stopped": "the leaderboard's status and stopped_by say it (patience)",
    "finished": "for the searcher: a trial that ended vs one the scheduler cut short",
    "kept_value": "for the searcher: the value Optuna is told when a trial completes",
    "launched_at": "for bench trial-overhead (start-up cost)",
    "loop_started_at": "for bench trial-overhead (start-up cost)",
    "time_*_s": "for bench trial-overhead (each phase's share of a trial)",
    "val_sites": "each held-out site's figures: the history's rows with a site, and sites.parquet",
}


@dataclass(frozen=True)
class EnsembleRecord:
    """The final evaluation's weighted ensemble of the best trials (``ensemble.json``): the members
    (trial ids; their checkpoints relative to the run folder, and the temperature that calibrates
    each), their weights, the temperature that calibrates the average (all fitted on the validation
    split), and its validation scores. Its own record, not a trial: the leaderboard shows it as
    the row ``trial_id == "ensemble"``, derived from this."""

    members: list[str]
    weights: list[float]
    checkpoints: list[str]
    temperatures: list[float]
    temperature: float = 1.0
    metric: str = "val_balanced_accuracy"
    val_scores: dict[str, float] = field(default_factory=dict)
    data_fingerprint: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> EnsembleRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """The search's record of a trial when it ended (a row of ``trials.parquet``): how it ended,
    what was drawn, its kept epoch (``kept``: the last that became the kept one) and its last, what it cost
    and where its checkpoint is (relative to the run folder)."""

    experiment: str
    trial_id: str
    status: TrialStatus
    stopped_by: str | None
    drawn: Mapping[str, Any]  # each searched hyperparameter's value
    kept: EpochReport | None
    last: EpochReport | None
    train_seconds: float
    cpu_seconds: float
    gpu_seconds: float
    checkpoint: str | None
    started_at: str | None
    finished_at: str
    leuktune_version: str
    data_fingerprint: str
    error: str | None = None
    error_file: str | None = None

    def to_row(self) -> dict[str, Any]:
        kept, last = self.kept, self.last
        facts = last.facts if last else None
        return {
            "experiment": self.experiment, "trial_id": self.trial_id, "status": self.status.value, **self.drawn,
            "kept_epoch": kept.epoch if kept else None, "epochs_run": last.epoch if last else 0,
            "stopped_by": self.stopped_by,
            **{f"val_{m}": kept.val.get(m) if kept else None for m in METRICS},
            **{f"val_{m}_se": kept.val_se.get(m) if kept else None for m in METRICS},
            "val_folds": kept.val_folds if kept and kept.val_folds else None,
            **{f"val_{m}_fold_std": kept.val_fold_std.get(m) if kept else None for m in METRICS},
            **{f"val_{m}_worst": kept.val_worst.get(m) if kept else None for m in METRICS},
            "val_confusion_matrix": kept.val_confusion_matrix if kept else None,
            **{k: getattr(facts, k) if facts else None for k in FACTS},
            "inference_ms": last.inference_ms if last else None,
            "train_seconds": self.train_seconds, "cpu_seconds": self.cpu_seconds, "gpu_seconds": self.gpu_seconds,
            "checkpoint": self.checkpoint, "started_at": self.started_at, "finished_at": self.finished_at,
            "leuktune_version": self.leuktune_version, "data_fingerprint": self.data_fingerprint,
            "error": self.error, "error_file": self.error_file,
        }


@dataclass(frozen=True, kw_only=True)
class TestFigures:
    """The final evaluation's figures of one model (a trial, or the ensemble) on the test split (a
    row of ``test.parquet``): each metric with its 95% bootstrap interval, the confusion matrix,
    and the calibration error after the temperature fitted on the validation split."""

    __test__ = False  # a name pytest would otherwise collect from a test module that imports it

    model: str  # the trial id, or "ensemble"
    scores: Mapping[str, float]  # every metric of METRICS (and ece) by name
    low: Mapping[str, float]
    high: Mapping[str, float]
    confusion_matrix: list[list[int]]
    images: int
    temperature: float
    ece_calibrated: float

    def to_row(self) -> dict[str, Any]:
        return {"trial_id": self.model, **{f"test_{m}": v for m, v in self.scores.items()},
                "test_confusion_matrix": self.confusion_matrix, "test_images": self.images,
                **{f"test_{m}_low": v for m, v in self.low.items()},
                **{f"test_{m}_high": v for m, v in self.high.items()},
                "temperature": self.temperature, "test_ece_calibrated": self.ece_calibrated}
