"""The ``search`` section: what is optimised, by which searcher, with which early stopping."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, model_validator

from leuktune import metrics
from leuktune.config.distributions import Strict
from leuktune.config.training import PositiveInt

# val_<metric>, or val_<metric>_worst: its worst held-out site (search.cv: sites)
SearchMetric = Literal[tuple(o for o in metrics.OBJECTIVES if o not in metrics.COSTS)]  # type: ignore[valid-type]
Objective = Literal[metrics.OBJECTIVES]  # type: ignore[valid-type]
DEFAULT_METRIC = "val_balanced_accuracy"  # also what a run without its config.yaml is ranked by
SITES = "sites"  # search.cv's leave-one-site-out (leuktune.data.folds.site_folds)


class OptunaConfig(Strict):
    # tpe learns from every trial (pruned ones too); gp fits a Gaussian process (Optuna's
    # GPSampler, for small budgets of slow trials); random draws independently; grid runs every
    # combination of the searched choices, e.g. to rerun a published comparison exactly.
    sampler: Literal["tpe", "gp", "random", "grid"] = "tpe"
    seed: int = 0
    # Trials drawn at random before tpe or gp model the rest (the default recipe and
    # search.start_from count among them): Optuna's 10, or auto: a third of search.num_samples,
    # 2 to 10. Measured on the harder built-in set at 12 trials (one seed, bench searchers), auto
    # did worse than 10 with TPE (0.761 vs 0.778) and GP with auto as well as TPE with 10: 10 stays.
    startup_trials: Union[PositiveInt, Literal["auto"]] = 10
    # TPE as Optuna advises for conditional spaces searched in parallel: parameters drawn
    # jointly, grouped by which ones apply, and running trials counted as bad until they end.
    multivariate: bool = True
    group: bool = True
    constant_liar: bool = True


    def startup(self, num_samples: int) -> int:
        """The random trials before the model, in a search of ``num_samples``."""
        if self.startup_trials != "auto":
            return self.startup_trials
        return min(10, max(2, num_samples // 3))


class SearcherConfig(Strict):
    optuna: OptunaConfig = OptunaConfig()


class AshaConfig(Strict):
    # Validated epochs before a trial may be stopped: an integer, or a fraction of the trial's
    # validations (train.epochs with train.validate_every 1; early validation scores swing too
    # much to judge a trial on).
    grace_period: Union[PositiveInt, float] = Field(0.25, gt=0)
    reduction_factor: float = Field(2, gt=1)
    # What ASHA judges a trial by at a rung: the last validated epoch's score (Ray's ASHA), the
    # best so far, or the mean of the last three (leuktune.tuning.scheduler).
    score: Literal["last", "best", "smoothed"] = "best"

    def grace_epochs(self, epochs: int) -> int:
        """The grace period in validated epochs, of ``epochs`` (a trial's validations)."""
        grace = self.grace_period
        return min(epochs, max(1, round(grace * epochs) if isinstance(grace, float) and grace < 1 else int(grace)))


class SchedulerConfig(Strict):
    asha: Optional[AshaConfig] = AshaConfig()


class StudyConfig(Strict):
    # Where the search's Optuna study is kept (parameters, every epoch's value, states, and each trial's
    # id, node and checkpoint; leuktune.study): null: an SQLite file of the run folder (study.db),
    # or an SQLAlchemy URL, e.g. postgresql://user:password@db.lab:5432/optuna for a lab's shared server.
    storage: Optional[str] = None
    # The study's name in that database; null: the experiment's name.
    name: Optional[str] = None


class SearchConfig(Strict):
    # The metric the search optimises: ASHA judges it, each trial keeps an epoch by it (train.keep),
    # the leaderboard ranks by it.
    metric: SearchMetric = DEFAULT_METRIC
    # Which way is better; when left out, the metric's own direction (val_loss: min).
    mode: Literal["max", "min"] = "max"
    # A multi-objective search: metric first, then costs to weigh against it, e.g.
    # [val_balanced_accuracy, params]; each in its own direction. The leaderboard marks the
    # Pareto front.
    objectives: list[Objective] = Field(default_factory=list)
    num_samples: int = Field(4, ge=1)
    # The first trial is leuktune's default recipe within the space (the one run a search must
    # beat), then each of start_from: configurations to try first, each a mapping of searched
    # keys as --set names them, e.g. {model.backbone: resnet50, train.lr: 0.001}; the keys a
    # start leaves out take the default recipe's values. The searcher learns from them as from
    # any trial; ASHA lets them run to the end, the baseline the search must beat. (leuktune.config.recipe)
    default_first: bool = True
    start_from: list[dict[str, Any]] = Field(default_factory=list)
    # Trials at a time; auto: as many as the cluster's CPUs and GPUs hold at the per-trial request.
    max_concurrent: Union[PositiveInt, Literal["auto"]] = "auto"
    searcher: SearcherConfig = SearcherConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    # Choose by cross-validation (small sets): each trial trains K models, each holding out one of
    # K group-disjoint folds of the training and validation images, and is judged by their mean;
    # its model averages the K (leuktune.data.folds). auto: 5 folds below 3000 training and
    # validation images, else off; null: off. sites: leave one lab out (data.sites, or a csv's site
    # column): each fold validates on one training site's images and trains on the other sites'; the
    # trial reports the mean over held-out sites as val_* and the worst site as val_*_worst (which
    # search.metric may name, e.g. val_balanced_accuracy_worst), each site's figures in the history
    # (its site column) and in sites.parquet. It needs at least two training sites.
    cv: Union[Annotated[int, Field(ge=2)], Literal["auto", "sites"], None] = None
    study: StudyConfig = StudyConfig()
    # Earlier runs (folders or URIs) whose completed trials start this search's study (Optuna's
    # add_trials): the parameters both spaces search, where the earlier value lies in this space.
    # Their search.metric must be this one's.
    warm_start: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_objectives(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        objectives = raw.get("objectives")
        if objectives and isinstance(objectives, list) and "metric" not in raw:
            raw = {**raw, "metric": objectives[0]}
        if "mode" not in raw and isinstance(raw.get("metric"), str) and raw["metric"] in metrics.OBJECTIVES:
            raw = {**raw, "mode": metrics.mode(raw["metric"])}
        return raw

    @model_validator(mode="after")
    def _objectives_start_with_metric(self) -> "SearchConfig":
        if self.objectives and (len(self.objectives) < 2 or self.objectives[0] != self.metric):
            raise ValueError(f"objectives must be the search metric ({self.metric}) followed by at least one "
                             f"more, e.g. [{self.metric}, params]; got {self.objectives}")
        worst = [o for o in (self.metric, *self.objectives) if o.endswith(metrics.WORST)]
        if worst and self.cv != SITES:
            raise ValueError(f"{worst[0]} is the worst held-out site's figure, which only search.cv: sites reports "
                             f"(got search.cv {self.cv}); set search.cv: sites, or name {metrics.of_worst(worst[0])}")
        if self.objectives and self.mode != metrics.mode(self.metric):
            raise ValueError(f"with objectives, each goes its own way: {self.metric} is {metrics.mode(self.metric)}")
        return self

    @property
    def directions(self) -> list[str]:
        """'max' or 'min' for each objective (just the metric's mode in a single-objective search)."""
        return [metrics.mode(o) for o in self.objectives] if self.objectives else [self.mode]
