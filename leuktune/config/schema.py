"""The experiment schema: one typed, validated description of a search.

Everything downstream (data, models, trainer, tuner, leaderboard) reads an
``ExperimentConfig`` and never YAML. A trial's concrete configuration is the same schema
with every distribution replaced by the value Optuna drew (``ExperimentConfig.with_params``).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import yaml
from pydantic import Field, model_validator

from leuktune.config.data import DataConfig
from leuktune.config.search import SITES, SearchConfig
from leuktune.config.distributions import Distribution, Strict, ValueType, When
from leuktune.config.recipe import SearchSpace
from leuktune.config.training import ModelConfig, TrainConfig
from leuktune.errors import LeuktuneError


class ConfigError(LeuktuneError, ValueError):
    """A configuration problem, phrased for the researcher who wrote the file."""


class ResourcesConfig(Strict):
    # How a trial's workers start (leuktune.training.trainer): tune runs the loop inside the
    # trial (no start-up cost), train through a Ray Train TorchTrainer (needed for DDP);
    # auto takes tune for one worker per trial, train for more.
    launcher: Literal["auto", "tune", "train"] = "auto"
    workers_per_trial: int = Field(1, ge=1)
    gpus_per_worker: float = Field(0, ge=0)
    cpus_per_worker: float = Field(1, gt=0)
    # Restarts of a trial's workers after a failure (a lost node, a preempted instance);
    # each restart resumes from the trial's latest checkpoint.
    max_failures: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _launcher_fits_workers(self) -> "ResourcesConfig":
        if self.launcher == "tune" and self.workers_per_trial > 1:
            raise ValueError("launcher 'tune' runs one worker per trial; use launcher 'train' (or auto) "
                             f"for workers_per_trial {self.workers_per_trial}")
        return self


class EvaluateConfig(Strict):
    """The final evaluation, the only reader of the test split (leuktune.evaluate)."""

    # After the search, the best top_k trials by the search metric are scored once on the test
    # split; 0 leaves it to `python -m leuktune.evaluate`.
    top_k: int = Field(3, ge=0)
    # Resamples of the test set (of its groups, i.e. patients, where the data has them) for 95% intervals.
    bootstrap: int = Field(1000, ge=100)
    # Also report the metrics of predictions averaged over the image and its flips.
    tta: bool = True
    # After the top trials, a weighted ensemble (greedy selection with replacement on the
    # validation split) of the best this many trials with a checkpoint, scored once on the test
    # split as its own leaderboard row (trial_id ensemble); 0 or 1: none.
    ensemble: int = Field(10, ge=0)


class StorageConfig(Strict):
    # Where run folders go (<path>/<name>/); see leuktune.runfolder.
    path: str = "runs"


class TrackingConfig(Strict):
    """Where else a search's trials are followed (leuktune.tracking); the study itself is search.study."""

    # An MLflow tracking server (http://host:5000, or a file/database URI MLflow takes): one MLflow
    # run per trial, under an experiment of this experiment's name. Needs pip install 'leuktune[mlflow]'.
    mlflow: Optional[str] = None
    # TensorBoard event files per trial under <run>/tensorboard/<trial_id> (tensorboard --logdir <run>/tensorboard).
    tensorboard: bool = False


# The sections whose fields may be searched. Leaf names are unique across them,
# so a searched field is known by its leaf name in Optuna, Tune and the leaderboard.
SEARCHABLE_SECTIONS = ("model", "train")
# The fields of the data section that may be searched too: the images are decoded once per value
# a search can draw (leuktune.data.prepare), not once per trial.
SEARCHABLE_DATA = ("stain_normalize",)


# A search of real images with no model space of its own: real architectures, pretrained on
# ImageNet (never the built-in demo's tiny test networks).
REAL_DATA_MODEL = {"backbone": {"choice": ["resnet50", "efficientnet_b0", "densenet121"]}, "pretrained": True}


class ExperimentConfig(Strict):
    name: str = Field("synthetic-default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="before")
    @classmethod
    def _real_data_gets_real_networks(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        data, model = raw.get("data") or {}, raw.get("model") or {}
        source = data.get("source", "synthetic") if isinstance(data, dict) else getattr(data, "source", "synthetic")
        sites = (data.get("sites") if isinstance(data, dict) else getattr(data, "sites", None)) or {}
        if sites:  # the labs' own sources: real networks unless every lab is the built-in set
            kinds = {s.get("source", "imagefolder") if isinstance(s, dict) else s.source for s in sites.values()}
            source = "synthetic" if kinds == {"synthetic"} else "sites"
        if source != "synthetic" and isinstance(model, dict) and "backbone" not in model:
            raw = {**raw, "model": {**REAL_DATA_MODEL, **model}}
        return raw

    @model_validator(mode="after")
    def _folds_run_in_the_trial(self) -> "ExperimentConfig":
        res = self.resources
        if self.search.cv is not None and (res.workers_per_trial > 1 or res.launcher == "train"):
            raise ValueError("search.cv trains a trial's folds one after another in the trial's own process: "
                             f"resources.workers_per_trial must be 1 (got {res.workers_per_trial}) and "
                             f"resources.launcher auto or tune (got {res.launcher})")
        self._sites_to_hold_out()
        return self

    def _sites_to_hold_out(self) -> None:
        """search.cv: sites needs two training sites. data.sites names them; a csv's site column
        is read with the data (leuktune.data.folds.check_sites); any other single source is one site."""
        if self.search.cv != SITES:
            return
        data = self.data
        if data.sites:
            training = [s for s in data.sites if s not in data.test_sites]
            if len(training) < 2:
                raise ValueError(f"search.cv sites holds out one training site per fold and trains on the others: it "
                                 f"needs at least two training sites; data.sites has {', '.join(training)} to train "
                                 f"on" + (f" (test sites: {', '.join(data.test_sites)})" if data.test_sites else "")
                                 + "; add a lab to data.sites, or set search.cv to a number of folds")
        elif data.source != "csv":
            raise ValueError(f"search.cv sites holds out one training site per fold and trains on the others: it "
                             f"needs at least two training sites; data.source {data.source} is one site (list the "
                             "labs under data.sites, or give a csv a site column), or set search.cv to a number of "
                             "folds")

    def searched(self) -> dict[str, Distribution]:
        """The hyperparameters this experiment searches, by leaf name, in schema order."""
        return {key: self.value(key) for key in SEARCHABLE_FIELDS if isinstance(self.value(key), Distribution)}

    def space(self) -> SearchSpace:
        """The searched fields with what a start of the search needs to know about the others."""
        searched = self.searched()
        return SearchSpace(searched=searched, fixed={k: self.value(k) for k in SEARCHABLE_FIELDS if k not in searched},
                           conditions=CONDITIONS, sections=SEARCHABLE_FIELDS, schema_defaults=SCHEMA_DEFAULTS,
                           pretrained=self.model.pretrained)

    def starts(self) -> list[dict[str, Any]]:
        """The trials the search runs first, as points of the space (leaf name -> value): the
        default recipe (``search.default_first``), then each of ``search.start_from``, once
        each. A ``ConfigError`` names an entry the search could not draw."""
        return list(self.named_starts().values())

    def named_starts(self) -> dict[str, dict[str, Any]]:
        """``starts`` by what each is ("the default recipe", "search.start_from[i]"); a start
        equal to an earlier one is left out."""
        search = self.search
        if search.searcher.optuna.sampler == "grid":
            if search.start_from:
                raise ConfigError("search.start_from: a grid runs every combination in its own order; "
                                  "leave start_from out, or use sampler tpe or random")
            return {}
        if not self.searched():
            return {}
        space = self.space()
        named: dict[str, dict[str, Any]] = {}
        try:
            if search.default_first:
                named["the default recipe"] = space.default_recipe()
            for i, given in enumerate(search.start_from):
                where = f"search.start_from[{i}]"
                point = space.start(given, where)
                if point not in named.values():
                    named[where] = point
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if len(named) > search.num_samples:
            raise ConfigError(f"search.start_from: {len(named)} starts (the default recipe "
                              f"{'included' if search.default_first else 'not included'}) but search.num_samples "
                              f"is {search.num_samples}; raise num_samples or name fewer starts")
        return named

    def value(self, key: str) -> Any:
        """A searchable field's value (or distribution) by its leaf name."""
        return getattr(getattr(self, _section_of(key)), key)

    def with_params(self, params: dict[str, Any]) -> "ExperimentConfig":
        """The concrete configuration of one trial: distributions replaced by drawn values.

        A conditional parameter that was not drawn (its condition does not hold) plays no
        part; it takes a representative value so the trial's config stays concrete."""
        unknown = set(params) - set(SEARCHABLE_FIELDS)
        if unknown:
            raise ConfigError(f"parameters not in the schema: {sorted(unknown)}")
        raw = self.to_dict()
        for key, value in params.items():
            raw[_section_of(key)][key] = value
        for key, dist in self.searched().items():
            if key not in params and key in CONDITIONS:
                raw[_section_of(key)][key] = dist.representatives()[0]
        resolved = ExperimentConfig.model_validate(raw)
        left = resolved.searched()
        if left:
            raise ConfigError(f"parameters still undrawn: {sorted(left)}")
        return resolved

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Every field that may hold a distribution, by leaf name -> its section.
SEARCHABLE_FIELDS: dict[str, str] = {
    **{key: "data" for key in SEARCHABLE_DATA},
    **{key: section for section in SEARCHABLE_SECTIONS for key in ExperimentConfig.model_fields[section].annotation.model_fields},
}


def _markers(kind: type) -> dict:
    return {key: marker for key, section in SEARCHABLE_FIELDS.items()
            for marker in ExperimentConfig.model_fields[section].annotation.model_fields[key].metadata
            if isinstance(marker, kind)}


# Each searchable field's schema default (a plain value, or the distribution searched by default).
SCHEMA_DEFAULTS: dict[str, Any] = {
    key: ExperimentConfig.model_fields[section].annotation.model_fields[key].default
    for key, section in SEARCHABLE_FIELDS.items()
}

# Fields drawn only when another field has a given value, from the ``When`` in their annotation.
CONDITIONS: dict[str, When] = _markers(When)
# The type of each searchable field's values, from the ``ValueType`` in its annotation.
VALUE_TYPES: dict[str, Any] = {key: marker.type for key, marker in _markers(ValueType).items()}


def _section_of(key: str) -> str:
    return SEARCHABLE_FIELDS[key]
