"""Which epoch a trial keeps, and what each validated epoch's score means for it: kept or not,
patience run out, finished, a checkpoint due. The same rules for a trial and for each fold of a
cross-validated one (leuktune.training.folds), and the tie-breaks a small validation split needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from leuktune.config import TrainConfig


@dataclass
class Kept:
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


def kept_from(meta: Mapping[str, Any]) -> Kept:
    """The kept epoch a checkpoint records (its meta's ``kept``; ``best`` before that was renamed),
    a trial resumes from. Checkpoints from before validate_every, and from before ties were
    broken, lack the later fields."""
    record = meta["kept"] if "kept" in meta else meta["best"]
    record = {"validation": record["epoch"], **record}
    return Kept(**{"peak": record["score"], "raised_at": record["validation"], **record})


def _rank_key(score: float, loss: float, ece: float) -> tuple[float, float, float]:
    """Larger is better: the score, then the lower loss, then the lower calibration error (unknown = worst)."""
    return score, -(math.inf if math.isnan(loss) else loss), -(math.inf if math.isnan(ece) else ece)



@dataclass(frozen=True)
class Verdict:
    """What an epoch's score means for the trial."""

    newly_kept: bool  # the epoch the trial keeps from now on (train.keep: a new best, or each epoch under last)
    early_stopped: bool  # train.patience validated epochs without a higher search metric
    finished: bool  # the trial ends here: its last epoch, patience, or diverged
    checkpoint_due: bool  # a newly kept epoch, the trial's end, or train.checkpoint_every epochs on


def judge(train: TrainConfig, kept: Kept, epoch: int, validation: int, since: int, score: float,
          diverged: bool, loss: float = math.nan, ece: float = math.nan) -> Verdict:
    """The verdict on ``epoch``, the trial's ``validation``-th validated one, reported after epoch
    ``since``, whose search metric, signed so that larger is better, is ``score``, and validation
    loss and calibration error ``loss`` and ``ece`` (the tie-breaks); ``kept`` is updated with it
    as ``train.keep`` says. Patience counts validated epochs; checkpoint_every counts epochs (a
    checkpoint at the first validated epoch on or after each multiple)."""
    newly_kept = not diverged and kept.update(score, epoch, validation, loss, ece, keep=train.keep)
    early = not diverged and bool(train.patience) and validation - kept.raised_at >= train.patience
    finished = diverged or early or epoch == train.epochs
    every = train.checkpoint_every
    due = not diverged and (newly_kept or finished or epoch // every > since // every)
    return Verdict(newly_kept=newly_kept, early_stopped=early, finished=finished, checkpoint_due=due)
