"""What adapting may do, and the candidates that cross-validation on the labelled cells chooses from.

The steps (each measured alone and combined by ``python -m leuktune.bench adapt``):

- ``bn``: BatchNorm statistics re-estimated on the lab's images (AdaBN): the labelled cells and the
  unlabelled ones given, never the cells it is scored on;
- ``colour``: the lab's colours moved to the home lab's (each channel's log intensity matched to the
  run's training images: undoes a stain's or lamp's per-channel gamma and gain);
- ``head``, ``last``, ``whole``: fine-tuning on the labelled cells in their 8 dihedral views (stain
  and colour jitter, off unless asked, where pixels are trained on), a few steps at a learning rate
  relative to the trial's: the head alone (on the backbone's features, computed once), the head and the last
  stage group, or the whole network;
- ``temperature``: the temperature re-fitted on the labelled cells' out-of-fold predictions.

With ``choose`` (the default), every combination of the label-free steps asked (``bn``, ``colour``)
with none or one of the tuning steps asked is a candidate, and cross-validation on the labelled cells
alone picks one; the temperature is re-fitted where that lowers the held-out log loss. Without it,
every step asked is applied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from leuktune.config import ConfigError

LABEL_FREE = ("bn", "colour")
TUNING = ("head", "last", "whole")
STEPS = (*LABEL_FREE, *TUNING, "temperature")
# What leuktune adapts with unless told: the steps bench adapt found to help (docs/benchmarks.md, Adaptation). On two real
# labs, a network trained from scratch at home gained nothing from tuning its head or last stage group
# (0.34 -> 0.38-0.42 balanced accuracy) and most from tuning the whole of it (0.34 -> 0.58-0.64).
DEFAULT_STEPS = ("bn", "colour", "whole", "temperature")


@dataclass(frozen=True)
class Candidate:
    """One way to adapt: the label-free steps applied and the tuning (None: no tuning)."""

    label_free: tuple[str, ...] = ()
    tuning: str | None = None

    @property
    def name(self) -> str:
        return "+".join([*self.label_free, *([self.tuning] if self.tuning else [])]) or "none"

    @property
    def cost(self) -> int:
        """How much it changes (ties in the figures go to the cheaper)."""
        return len(self.label_free) + (1 + TUNING.index(self.tuning) if self.tuning else 0)


@dataclass(frozen=True)
class Plan:
    """How to adapt: ``steps`` (of ``STEPS``), ``choose`` among them by cross-validation on the
    labelled cells (``folds``), and the fine-tuning's ``views`` (dihedral views of each cell the
    head is tuned on), steps (``head_steps``, ``deep_steps``), ``batch_size``, learning rate
    (``lr_scale`` x the trial's own) and jitter (``color``, ``stain``: as ``train.augment``'s),
    how many unlabelled cells at most the label-free steps read (``most_unlabelled``), and whether
    BatchNorm layers use each batch's statistics while pixels are tuned, updating their running ones
    (``batch_statistics``, as a plain fine-tune in training mode does) or keep theirs."""

    steps: tuple[str, ...] = DEFAULT_STEPS
    choose: bool = True
    folds: int = 3
    views: int = 8
    head_steps: int = 100
    deep_steps: int = 60
    batch_size: int = 32
    lr_scale: float = 0.15
    # jitter off: on two real labs (2 seeds) tuning the whole network did as well or better without it
    color: float = 0.0
    stain: float = 0.0
    most_unlabelled: int = 512
    batch_statistics: bool = False

    def __post_init__(self):
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ConfigError(f"adapting step {unknown[0]!r} is not one of {', '.join(STEPS)}")
        if not self.choose and len([s for s in self.steps if s in TUNING]) > 1:
            raise ConfigError(f"steps {', '.join(self.steps)}: without choosing, at most one of {', '.join(TUNING)} "
                              "applies (they are alternatives)")
        if self.folds < 2:
            raise ConfigError(f"adapting folds {self.folds}: cross-validation needs at least 2")
        if not 1 <= self.views <= 8:
            raise ConfigError(f"adapting views {self.views}: from 1 to 8 (the symmetries of the square)")

    @property
    def label_free(self) -> tuple[str, ...]:
        return tuple(s for s in LABEL_FREE if s in self.steps)

    @property
    def tunings(self) -> tuple[str, ...]:
        return tuple(s for s in TUNING if s in self.steps)

    def candidates(self) -> list[Candidate]:
        """What cross-validation chooses from (with ``choose``), or the one way asked."""
        if not self.choose:
            return [Candidate(self.label_free, self.tunings[0] if self.tunings else None)]
        subsets = [subset for k in range(len(self.label_free) + 1)
                   for subset in itertools.combinations(self.label_free, k)]
        return [Candidate(subset, tuning) for tuning in (None, *self.tunings) for subset in subsets]
