"""Early stopping on signal, not noise: ASHA that judges a trial by a score of its epochs so far.

Validation scores of the first epochs swing (on a real 4-class set one trial scored 0.40, 0.44,
0.90, 0.54 in its first four), and Ray's ASHA judges the single epoch that reaches a rung. Here
ASHA sees, for each trial, ``score`` of its validated values so far (``search.scheduler.asha.score``):

- ``last``: the epoch at the rung, as Ray's ASHA does;
- ``best``: the best so far (what the trial would keep if stopped now);
- ``smoothed``: the mean of the last ``SMOOTHING`` validated values (fewer at the start).

``python -m leuktune.bench signal`` measures which ranks trials at the first rung most as they
end (Kendall tau between rung and final scores); the default is its choice.

>>> round(SCORES["smoothed"]([0.40, 0.44, 0.90, 0.54], "max"), 3)
0.627
>>> SCORES["best"]([1.2, 0.9, 1.1], "min")
0.9
"""

from __future__ import annotations

import statistics
from typing import Callable, Sequence

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from leuktune import internals

SMOOTHING = 3  # validated epochs a smoothed score averages


def _last(values: Sequence[float], mode: str) -> float:
    return values[-1]


def _best(values: Sequence[float], mode: str) -> float:
    return max(values) if mode == "max" else min(values)


def _smoothed(values: Sequence[float], mode: str) -> float:
    return statistics.fmean(values[-SMOOTHING:])


SCORES: dict[str, Callable[[Sequence[float], str], float]] = {"last": _last, "best": _best, "smoothed": _smoothed}


class ScoredASHA(ASHAScheduler):
    """ASHA (Ray's, unchanged) fed ``score`` of each trial's values so far in place of the
    latest one. Values are kept by epoch, so a trial restarted from a checkpoint, which reports
    its epochs again, is scored as if it had run straight through.

    Trials whose parameters are one of ``spared`` (the search's starts: the default recipe and
    ``search.start_from``) run to the end: they are the baseline the search must beat, and a
    search that stopped its default at the first rung could end worse than the default alone.
    Their scores still count at each rung, against the others."""

    def __init__(self, *, score: str, epoch_attr: str = "epoch", spared: list[dict] = (), **asha):
        super().__init__(**asha)
        self._score = SCORES[score]
        self._epoch_attr = epoch_attr
        self._values: dict[str, dict[int, float]] = {}
        self._spared = [dict(point) for point in spared]

    def spares(self, trial) -> bool:
        """Whether ``trial`` is one of the starts, which run to the end."""
        config = getattr(trial, "config", None) or {}
        return any(all(config.get(key) == value for key, value in point.items()) for point in self._spared)

    def scored(self, trial, result: dict) -> dict:
        """``result`` with the search metric replaced by the trial's score so far."""
        metric, mode, _, _ = internals.asha_settings(self)
        if metric not in result or self._epoch_attr not in result:
            return result
        seen = self._values.setdefault(trial.trial_id, {})
        seen[result[self._epoch_attr]] = result[metric]
        return {**result, metric: self._score([seen[epoch] for epoch in sorted(seen)], mode)}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, self.scored(trial, result))
        _, _, time_attr, max_t = internals.asha_settings(self)
        if action == TrialScheduler.STOP and self.spares(trial) and result.get(time_attr, 0) < max_t:
            internals.asha_unstop(self)
            return TrialScheduler.CONTINUE
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, self.scored(trial, result))

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._values.pop(trial.trial_id, None)
        super().on_trial_remove(tune_controller, trial)
