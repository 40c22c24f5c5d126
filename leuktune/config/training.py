"""The ``model`` and ``train`` sections: what network a trial builds and how it trains it.

Fields made with ``searchable`` hold a plain value or a distribution the search draws from.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from leuktune.config.distributions import Choice, LogUniform, Strict, When, representatives, searchable

# torchvision-only architectures that timm does not provide.
TORCHVISION_BACKBONES = ("alexnet", "googlenet")


def _known_backbone(name: str) -> str:
    import timm  # imported here: validating a config should not pay for timm otherwise

    if name in TORCHVISION_BACKBONES or timm.is_model(name):
        return name
    if re.fullmatch(r"hf-hub:[\w.-]+/[\w.-]+", name):
        return name  # a model on the Hugging Face Hub in timm's form, built from the local cache

    close = difflib.get_close_matches(name, timm.list_models() + list(TORCHVISION_BACKBONES), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown backbone {name!r}: not a timm model (nor hf-hub:<owner>/<model>) nor one of "
                     f"{TORCHVISION_BACKBONES}{hint}")


BackboneName = Annotated[str, AfterValidator(_known_backbone)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]


Activation = Literal["default", "relu", "leaky_relu", "gelu", "silu", "elu"]
UnfreezeDepth = Union[Annotated[int, Field(ge=0)], Literal["all"]]


# The classifier heads (leuktune.models.heads builds each; a test checks the two agree). The
# probes (logistic, knn) are fitted once on a frozen backbone's features, not trained by steps.
HEAD_KINDS = ("linear", "mlp", "attention", "logistic", "knn")
PROBE_HEADS = ("logistic", "knn")
HeadKind = Literal[HEAD_KINDS]  # type: ignore[valid-type]


class ModelConfig(Strict):
    """The network a trial builds: a backbone (timm or torchvision) and a head."""

    # Any timm name (resnet50, efficientnet_b0, vit_small_patch14_dinov2, ...), torchvision's alexnet or
    # googlenet, or hf-hub:<owner>/<model>; test_resnet and test_efficientnet are the demo's tiny networks.
    backbone: searchable(BackboneName, "choice") = Choice(
        choice=["test_resnet", "test_efficientnet", "resnet18"])
    # Start from pretrained weights (model.pretrained_path or the Hugging Face cache); false: random init.
    pretrained: bool = False
    pretrained_path: Optional[Path] = Field(
        None, description="a weights file, or a folder of <backbone>.{safetensors,pth,pt,bin} files")
    # Let each trial download missing pretrained weights; false: they must be on the machine (checked before Ray).
    allow_download: bool = False
    # The classifier on the backbone's features: linear, mlp, attention, or the probes logistic and knn.
    head: searchable(HeadKind, "choice") = "linear"
    mlp_hidden: searchable(PositiveInt, "choice", "int", when=When("head", equals="mlp")) = 256  # the MLP head's width
    mlp_layers: searchable(PositiveInt, "choice", "int", when=When("head", equals="mlp")) = 1  # its hidden layers
    # The attention head's heads (they must divide attention_dim).
    attention_heads: searchable(PositiveInt, "choice", "int", when=When("head", equals="attention")) = 4
    attention_dim: PositiveInt = 256  # the attention head's width
    # The linear probe's L2 penalty on standardised features, per image (as weight decay is), e.g.
    # {loguniform: [1.0e-5, 1.0e-1]}.
    probe_l2: searchable(PositiveFloat, "choice", "loguniform", "uniform", when=When("head", equals="logistic")) = 1e-3
    # The kNN probe's neighbours, e.g. {choice: [5, 10, 20, 50]}.
    knn_k: searchable(PositiveInt, "choice", "int", when=When("head", equals="knn")) = 20
    # "default" keeps each backbone's own activation; another value replaces it wherever
    # timm's act_layer reaches, and is always used in the head.
    activation: searchable(Activation, "choice") = "default"
    dropout: searchable(Fraction, "choice", "uniform") = 0.0  # before the head's last layer
    # 0 = frozen feature extractor, k = top k stage groups trainable, all = full fine-tuning.
    # The probes (head logistic or knn) always freeze the backbone, whatever is drawn here.
    unfreeze_depth: searchable(UnfreezeDepth, "choice", "int") = "all"
    # A frozen backbone's features computed once (all eight flips and quarter turns of every
    # training image) and shared by every trial with the same backbone, weights and data
    # (leuktune.training.features): such a trial trains its head only, and the augmentations that
    # need pixels (rotate, zoom, shear, color, stain) are not applied to it. off: the frozen
    # backbone runs every epoch with every augmentation (the probes then compute their
    # features in the trial, once).
    feature_cache: Literal["auto", "off"] = "auto"
    # The most one backbone's cached features may take (GB, float16, memory-mapped: one copy per
    # node): past it, fewer views are cached (4, 2, then 1), then none (the backbone runs every
    # epoch; a probe is refused).
    feature_cache_gb: float = Field(4.0, gt=0)

    @field_validator("feature_cache", mode="before")
    @classmethod
    def _off_forms(cls, raw):
        return "off" if raw is False or raw is None else raw  # YAML reads a bare off as false

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        for heads in representatives(self.attention_heads):
            if self.attention_dim % heads:
                raise ValueError(f"attention_heads {heads} does not divide attention_dim {self.attention_dim}")
        if self.pretrained_path is not None and not self.pretrained:
            raise ValueError("pretrained_path is set but pretrained is false")
        return self


class AugmentConfig(Strict):
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
    # Stain variation between labs (Giemsa, May-Grunwald, Wright batches): each dye's optical
    # density scaled by up to +-stain and shifted by up to +-stain/10 (0 = off; e.g. 0.3).
    stain: float = Field(0.0, ge=0, le=1)


class TrainConfig(Strict):
    """How a trial trains: optimiser, schedule, augmentation, precision, validation and checkpoints."""

    epochs: int = Field(8, ge=1)  # a trial's epochs when nothing stops it earlier (ASHA, patience)
    # Seeds the initial weights, the order of each epoch and the augmentation draws.
    seed: int = 0
    # The global batch: each of resources.workers_per_trial workers takes an equal part,
    # so a trial's lr means the same whatever the number of workers.
    batch_size: searchable(PositiveInt, "choice", "int") = 32
    # AdamW's peak learning rate (the head's; the backbone's is lr * backbone_lr_mult).
    lr: searchable(PositiveFloat, "choice", "loguniform", "uniform") = LogUniform(loguniform=(1e-3, 1e-2))
    # The backbone learns at lr * backbone_lr_mult: lower for fine-tuning pretrained layers.
    # Drawn only when some of the backbone trains.
    backbone_lr_mult: searchable(PositiveFloat, "choice", "loguniform", "uniform",
                                 when=When("unfreeze_depth", not_equal=0)) = 1.0
    weight_decay: searchable(NonNegativeFloat, "choice", "loguniform", "uniform") = 1e-4  # AdamW's
    # The learning rate after warm-up: cosine decay to zero, or one-cycle.
    schedule: searchable(Literal["cosine", "onecycle"], "choice") = "cosine"
    # Linear warm-up from lr/25 (both schedules); fractions of an epoch are allowed.
    warmup_epochs: float = Field(0.5, ge=0)
    label_smoothing: searchable(Fraction, "choice", "uniform") = 0.0  # of the cross-entropy targets
    # Max global gradient norm; 0 = no clipping.
    grad_clip: float = Field(1.0, ge=0)
    # Class imbalance (C-NMC is about 2:1): weighted_loss weights each class by
    # 1 / its share of the training split; sampler draws each epoch with those weights.
    class_balance: searchable(Literal["none", "weighted_loss", "sampler"], "choice") = "weighted_loss"
    augment: AugmentConfig = AugmentConfig()
    # Scales every magnitude of train.augment: one searched number says how hard to augment.
    augment_strength: searchable(Annotated[float, Field(ge=0, le=4)], "choice", "uniform") = 1.0
    # The levers of a model that must hold at other labs (leuktune.data.augment; each searchable, each
    # off or as before by default; data.stain_normalize is the fifth). color_strength scales
    # train.augment's color and stain jitter (on top of augment_strength): search how hard to restain,
    # e.g. augment.stain 0.3 with {uniform: [0.0, 3.0]}.
    color_strength: searchable(Annotated[float, Field(ge=0, le=4)], "choice", "uniform") = 1.0
    # Another lab's magnification: each image's cell resized by a factor drawn log-uniformly in
    # [1/scale_augment, scale_augment] (2.0: [0.5, 2.0]), then cropped, or padded with the image's mean
    # colour, back to its size; 1 = off.
    scale_augment: searchable(Annotated[float, Field(ge=1, le=4)], "choice", "uniform") = 1.0
    # The chance that an image is made grey (its luma in all three channels): a model that cannot
    # lean on the stain's colour; 0 = never.
    grayscale: searchable(Annotated[float, Field(ge=0, le=1)], "choice", "uniform") = 0.0
    # Another microscope's focus: each image blurred by a Gaussian of a sigma drawn in [0, blur]
    # pixels; 0 = off.
    blur: searchable(Annotated[float, Field(ge=0, le=5)], "choice", "uniform") = 0.0
    # auto: bf16 on GPUs that have it, else fp16 on GPU; fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # on GPU only; faster convolutions with AMP
    # Before each validation, BatchNorm's running statistics recomputed on this many training
    # batches (0 = off): at a high learning rate they lag the weights, and early validation
    # scores then rank trials by that lag (leuktune.training.epoch.refresh_batchnorm).
    bn_refresh: int = Field(8, ge=0)
    # Validation, and its report to Tune, ASHA and the leaderboard, every N epochs and on the
    # last: on a GPU an epoch of a few thousand cells takes about a second, and scoring the
    # validation split, reporting and checkpointing each epoch cost as much again. ASHA's grace
    # period and rungs and train.patience count validated epochs.
    validate_every: int = Field(1, ge=1)
    # Stop a trial when the search metric has not improved for this many validated epochs; 0 = never.
    patience: int = Field(0, ge=0)
    # Which epoch a trial keeps (its checkpoint, its leaderboard row, what the searcher is told):
    # last = the epoch it ended on (its schedule's end, or where patience or ASHA stopped it; what
    # a cosine or one-cycle schedule is built to end on); best = the best search metric, ties
    # broken by the lower validation loss, then the lower calibration error, then the later
    # epoch; first_best = the first epoch to reach the best metric, ties ignored (leuktune before
    # 0.2 kept this one: for comparisons). last is the default: over 3 seeds on 3 sets (bench
    # selection, docs/benchmarks.md) a search that kept its trials' last epochs chose better on test than one
    # that kept their best epochs, each time, and never worse than one default trial.
    keep: Literal["last", "best", "first_best"] = "last"
    # A resumable checkpoint every N epochs (at the first validated epoch from there), at every
    # newly kept epoch and at the last epoch.
    checkpoint_every: int = Field(1, ge=1)
    # torch.compile the model: faster epochs once compiled, but compiling takes about a
    # minute per trial, more than a short trial gains.
    compile: bool = False
    # An exponential moving average of the weights (timm's ModelEmaV3, decay warmed up) is what
    # validation scores and the checkpoint keeps: steadier early epochs for ASHA to judge.
    # Written as a decay, {decay: 0.999}, or off; searchable, e.g. {choice: [0.0, 0.999]} (0 = off).
    ema: searchable(Annotated[float, Field(ge=0, lt=1)], "choice", "uniform") = 0.0

    def validated(self, epoch: int) -> bool:
        """Whether ``epoch`` is scored on the validation split (and reported)."""
        return epoch % self.validate_every == 0 or epoch == self.epochs

    @property
    def validations(self) -> int:
        """How many epochs a trial that runs to the end validates: ASHA's rungs are counted in these."""
        return -(-self.epochs // self.validate_every)

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_forms(cls, raw):
        if raw is False or raw is None or raw == "off":  # YAML reads a bare off as false
            return 0.0
        if isinstance(raw, dict) and set(raw) == {"decay"}:
            return raw["decay"]
        return raw
