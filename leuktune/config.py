"""The experiment schema: one typed, validated description of a search.

Everything downstream (data, models, trainer, tuner, leaderboard) reads an
``ExperimentConfig`` and never YAML, so a bad file fails here, before any Ray
resource is used, with the file, the key and what was expected.

A searchable entry is written in YAML as a plain value or as one of
``{choice: [...]}``, ``{loguniform: [lo, hi]}``, ``{uniform: [lo, hi]}``,
``{int: [lo, hi]}``; it is parsed into a ``Distribution`` object. A trial's
concrete configuration is the same schema with every distribution replaced by the
value Optuna drew (``ExperimentConfig.with_params``).
"""

from __future__ import annotations

import difflib
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

# The metrics every trial reports on its validation split and the final
# evaluation reports on the test split; the leaderboard has val_* and test_* columns.
METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_weighted",
    "precision_macro",
    "precision_weighted",
    "recall_macro",
    "recall_weighted",
    "roc_auc",
    "loss",
)
SearchMetric = Literal[tuple(f"val_{m}" for m in METRICS)]  # type: ignore[valid-type]

SYNTHETIC_CLASSES = ("ALL", "AML", "CLL", "CML", "MM", "healthy")

# torchvision-only architectures that timm does not provide.
TORCHVISION_BACKBONES = ("alexnet", "googlenet")


class ConfigError(ValueError):
    """A configuration problem, phrased for the researcher who wrote the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- #
# Search-space distributions
# --------------------------------------------------------------------------- #


class Choice(_Strict):
    choice: list[Any] = Field(min_length=1)


class LogUniform(_Strict):
    loguniform: tuple[float, float]


class Uniform(_Strict):
    uniform: tuple[float, float]


class IntRange(_Strict):
    int_: tuple[int, int] = Field(alias="int")


Distribution = Union[Choice, LogUniform, Uniform, IntRange]
_DISTRIBUTIONS: dict[str, type[_Strict]] = {
    "choice": Choice,
    "loguniform": LogUniform,
    "uniform": Uniform,
    "int": IntRange,
}


def is_distribution(value: Any) -> bool:
    return isinstance(value, (Choice, LogUniform, Uniform, IntRange))


def candidates(value: Any) -> list[Any]:
    """Representative values of a field: every choice, the lower bound of a range, or the value."""
    if isinstance(value, Choice):
        return list(value.choice)
    if isinstance(value, (LogUniform, Uniform, IntRange)):
        (low, _high), = value.model_dump().values()
        return [low]
    return [value]


def _searchable(value_type: Any, kinds: tuple[str, ...]) -> Any:
    """A field that holds either a plain ``value_type`` or a distribution over it.

    Each choice and each bound is checked against ``value_type``, so a negative
    learning rate inside ``{loguniform: [...]}`` is caught as surely as a plain one.
    """
    adapter = TypeAdapter(value_type)
    forms = ", ".join(
        {"choice": "{choice: [...]}", "loguniform": "{loguniform: [lo, hi]}",
         "uniform": "{uniform: [lo, hi]}", "int": "{int: [lo, hi]}"}[k]
        for k in kinds
    )

    def check(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError as err:
            msg = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"{msg} (got {value!r})") from None

    def parse(raw: Any) -> Any:
        if is_distribution(raw):
            raw = raw.model_dump(by_alias=True)
        if not isinstance(raw, dict):
            return check(raw)
        if len(raw) != 1 or next(iter(raw)) not in kinds:
            raise ValueError(
                f"expected a plain value or one of {forms}; got a mapping with keys "
                f"{sorted(map(str, raw))}"
            )
        kind, spec = next(iter(raw.items()))
        if kind == "choice":
            if not isinstance(spec, list) or not spec:
                raise ValueError("a choice needs a non-empty list of values")
            return Choice(choice=[check(v) for v in spec])
        if not isinstance(spec, (list, tuple)) or len(spec) != 2:
            raise ValueError(f"{{{kind}: ...}} needs exactly two bounds [lo, hi]")
        lo, hi = check(spec[0]), check(spec[1])
        if not lo < hi:
            raise ValueError(f"{{{kind}: [{lo}, {hi}]}}: the lower bound must be below the upper")
        if kind == "loguniform" and lo <= 0:
            raise ValueError(f"{{loguniform: [{lo}, {hi}]}}: bounds must be positive")
        return _DISTRIBUTIONS[kind].model_validate({kind: [lo, hi]})

    return Annotated[Any, AfterValidator(parse)]


def _known_backbone(name: str) -> str:
    import timm  # imported here: validating a config should not pay for timm otherwise

    if name in TORCHVISION_BACKBONES or timm.is_model(name):
        return name
    close = difflib.get_close_matches(name, timm.list_models() + list(TORCHVISION_BACKBONES), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown backbone {name!r}: not a timm model nor one of {TORCHVISION_BACKBONES}{hint}")


BackboneName = Annotated[str, AfterValidator(_known_backbone)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]

# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #


class SplitConfig(_Strict):
    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        return self


class SyntheticConfig(_Strict):
    """The built-in procedural blood-smear set (see leuktune.data.synthetic)."""

    classes: list[Literal[SYNTHETIC_CLASSES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(SYNTHETIC_CLASSES), min_length=2
    )
    images_per_class: int = Field(150, ge=5)
    image_size: int = Field(96, ge=32, le=1024)
    seed: int = 0


ResizeMode = Literal["pad", "crop", "stretch"]


class DataConfig(_Strict):
    source: Literal["imagefolder", "cnmc", "allidb", "csv", "synthetic"] = "synthetic"
    root: Optional[Path] = Field(
        None, description="dataset folder (csv: the manifest file); synthetic: where to write it "
        "(default: under storage)"
    )
    image_size: int = Field(64, ge=16, le=1024)
    # pad keeps the whole cell (aspect kept, borders in the image's mean colour);
    # crop takes the centre square; stretch changes the aspect.
    resize: ResizeMode = "pad"
    # Perceptual-hash distance (bits of 64) under which two images in different splits are
    # reported as near-duplicates; 0 turns the check off.
    near_duplicate_distance: int = Field(4, ge=0, le=32)
    split: SplitConfig = SplitConfig()
    on_bad_image: Literal["error", "skip"] = "error"
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _root_when_needed(self) -> "DataConfig":
        if self.source != "synthetic" and self.root is None:
            raise ValueError(f"data.root is required for source {self.source!r}")
        return self


Activation = Literal["default", "relu", "leaky_relu", "gelu", "silu", "elu"]
UnfreezeDepth = Union[Annotated[int, Field(ge=0)], Literal["all"]]


class ModelConfig(_Strict):
    backbone: _searchable(BackboneName, ("choice",)) = Choice(
        choice=["test_resnet", "test_efficientnet", "resnet18"]
    )
    pretrained: bool = False
    pretrained_path: Optional[Path] = Field(
        None, description="a weights file, or a folder of <backbone>.{safetensors,pth,pt,bin} files")
    allow_download: bool = False
    head: _searchable(Literal["linear", "mlp", "attention"], ("choice",)) = "linear"
    mlp_hidden: _searchable(PositiveInt, ("choice", "int")) = 256
    mlp_layers: _searchable(PositiveInt, ("choice", "int")) = 1
    attention_heads: _searchable(PositiveInt, ("choice", "int")) = 4
    attention_dim: PositiveInt = 256
    # "default" keeps each backbone's own activation; another value replaces it wherever
    # timm's act_layer reaches, and is always used in the head.
    activation: _searchable(Activation, ("choice",)) = "default"
    dropout: _searchable(Fraction, ("choice", "uniform")) = 0.0
    # 0 = frozen feature extractor, k = top k stage groups trainable, all = full fine-tuning.
    unfreeze_depth: _searchable(UnfreezeDepth, ("choice", "int")) = "all"

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ModelConfig":
        for heads in candidates(self.attention_heads) if not isinstance(self.attention_heads, IntRange) \
                else range(self.attention_heads.int_[0], self.attention_heads.int_[1] + 1):
            if self.attention_dim % heads:
                raise ValueError(f"attention_heads {heads} does not divide attention_dim {self.attention_dim}")
        if self.pretrained_path is not None and not self.pretrained:
            raise ValueError("pretrained_path is set but pretrained is false")
        return self


# Parameters that only exist for some draws: drawn only when (field, value) holds.
CONDITIONAL = {
    "mlp_hidden": ("head", "mlp"),
    "mlp_layers": ("head", "mlp"),
    "attention_heads": ("head", "attention"),
}


class AugmentConfig(_Strict):
    """Per-sample augmentation, drawn on the device for every batch (leuktune.data.augment).

    Magnitudes are the largest change at ``train.augment_strength`` 1; the strength
    scales them all, so one searched number says how hard to augment.
    """

    flip: bool = True  # horizontal, vertical and transposed: a cell on a slide has no up or left
    rotate: float = Field(15.0, ge=0, le=180, description="degrees, either way")
    zoom: float = Field(0.1, ge=0, lt=1, description="scale drawn in [1 - zoom, 1 + zoom]")
    shear: float = Field(5.0, ge=0, le=45, description="degrees, either way")
    # Stain variation: brightness and contrast change by up to +-color, hue turns by up to
    # +-color/2 of a full turn.
    color: float = Field(0.05, ge=0, le=1)


ClassBalance = Literal["none", "weighted_loss", "sampler"]


class TrainConfig(_Strict):
    epochs: int = Field(8, ge=1)
    # The global batch: each of resources.workers_per_trial workers takes an equal part,
    # so a trial's lr means the same whatever the number of workers.
    batch_size: _searchable(PositiveInt, ("choice", "int")) = 32
    lr: _searchable(PositiveFloat, ("choice", "loguniform", "uniform")) = LogUniform(
        loguniform=(1e-3, 1e-2)
    )
    # The backbone learns at lr * backbone_lr_mult: lower for fine-tuning pretrained layers.
    backbone_lr_mult: _searchable(PositiveFloat, ("choice", "loguniform", "uniform")) = 1.0
    weight_decay: _searchable(Annotated[float, Field(ge=0)], ("choice", "loguniform", "uniform")) = 1e-4
    schedule: _searchable(Literal["cosine", "onecycle"], ("choice",)) = "cosine"
    # Linear warm-up from lr/25 (both schedules); fractions of an epoch are allowed.
    warmup_epochs: float = Field(0.5, ge=0)
    label_smoothing: _searchable(Annotated[float, Field(ge=0, lt=1)], ("choice", "uniform")) = 0.0
    # Max global gradient norm; 0 = no clipping.
    grad_clip: float = Field(1.0, ge=0)
    # Class imbalance (C-NMC is about 2:1): weighted_loss weights each class by
    # 1 / its share of the training split; sampler draws each epoch with those weights.
    class_balance: _searchable(ClassBalance, ("choice",)) = "weighted_loss"
    augment: AugmentConfig = AugmentConfig()
    augment_strength: _searchable(Annotated[float, Field(ge=0, le=4)], ("choice", "uniform")) = 1.0
    # auto: bf16 on GPUs that have it, else fp16 on GPU; fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # on GPU only; faster convolutions with AMP
    # Stop a trial when the search metric has not improved for this many epochs; 0 = never.
    patience: int = Field(0, ge=0)
    # A resumable checkpoint every N epochs (and at every new best and the last epoch).
    checkpoint_every: int = Field(1, ge=1)


class OptunaConfig(_Strict):
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0


class SearcherConfig(_Strict):
    optuna: OptunaConfig = OptunaConfig()


class AshaConfig(_Strict):
    grace_period: int = Field(2, ge=1)
    reduction_factor: float = Field(2, gt=1)


class SchedulerConfig(_Strict):
    asha: Optional[AshaConfig] = AshaConfig()


class SearchConfig(_Strict):
    metric: SearchMetric = "val_balanced_accuracy"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(4, ge=1)
    max_concurrent: int = Field(2, ge=1)
    searcher: SearcherConfig = SearcherConfig()
    scheduler: SchedulerConfig = SchedulerConfig()


class ResourcesConfig(_Strict):
    workers_per_trial: int = Field(1, ge=1)
    gpus_per_worker: float = Field(0, ge=0)
    cpus_per_worker: float = Field(1, gt=0)
    # Restarts of a trial's workers after a failure (a lost node, a preempted instance);
    # each restart resumes from the trial's latest checkpoint.
    max_failures: int = Field(1, ge=0)


class StorageConfig(_Strict):
    path: str = "runs"


# The sections whose fields may be searched. Leaf names are unique across them,
# so a searched field is known by its leaf name in Optuna, Tune and the leaderboard.
SEARCHABLE_SECTIONS = ("model", "train")


class ExperimentConfig(_Strict):
    name: str = Field("synthetic-default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    storage: StorageConfig = StorageConfig()

    def searched(self) -> dict[str, Distribution]:
        """The hyperparameters this experiment searches, by leaf name, in schema order."""
        found: dict[str, Distribution] = {}
        for section in SEARCHABLE_SECTIONS:
            for key, value in getattr(self, section):
                if is_distribution(value):
                    found[key] = value
        return found

    def with_params(self, params: dict[str, Any]) -> "ExperimentConfig":
        """The concrete configuration of one trial: distributions replaced by drawn values."""
        updates: dict[str, dict[str, Any]] = {s: {} for s in SEARCHABLE_SECTIONS}
        for section in SEARCHABLE_SECTIONS:
            for key in type(getattr(self, section)).model_fields:
                if key in params:
                    updates[section][key] = params[key]
        unknown = set(params) - {k for u in updates.values() for k in u}
        if unknown:
            raise ConfigError(f"parameters not in the schema: {sorted(unknown)}")
        raw = self.to_dict()
        for section, values in updates.items():
            raw[section].update(values)
        # A conditional parameter not drawn (its condition does not hold) plays no part;
        # it takes a representative value so the trial's config stays concrete.
        for key, (parent, _) in CONDITIONAL.items():
            section = next(s for s in SEARCHABLE_SECTIONS if key in type(getattr(self, s)).model_fields)
            if key not in params and is_distribution(getattr(getattr(self, section), key)):
                raw[section][key] = candidates(getattr(getattr(self, section), key))[0]
        resolved = ExperimentConfig.model_validate(raw)
        left = resolved.searched()
        if left:
            raise ConfigError(f"parameters still undrawn: {sorted(left)}")
        return resolved

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def run_dir(self) -> str:
        return f"{self.storage.path.rstrip('/')}/{self.name}"


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment file (or the built-in default when ``path`` is None) and apply
    ``--set key=value`` overrides. Raises ``ConfigError`` naming the file and key."""
    source = str(path) if path is not None else "<built-in default>"
    raw: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{source}: no such experiment file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    for item in overrides:
        _apply_override(raw, item)
    if overrides:
        source += " with --set " + " ".join(overrides)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {err}") from None


def _describe(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-after")]
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{key}: unknown key; {hint}expected one of {', '.join(allowed)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = "" if e["type"] == "value_error" or "input" not in e else f" (got {e['input']!r})"
            problems.append(f"{key}: {msg}{got}")
    return f"{source}: invalid experiment configuration: " + "; ".join(problems) + "."


def _allowed_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(part)
        nested = [t for t in (field.annotation, *typing.get_args(field.annotation)) if field is not None
                  and isinstance(t, type) and issubclass(t, BaseModel)] if field else []
        if not nested:
            return []
        model = nested[0]
    return [f.alias or name for name, f in model.model_fields.items()]
