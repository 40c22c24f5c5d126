"""The experiment's searched fields -> an Optuna define-by-run space for Ray Tune's OptunaSearch.

Define-by-run (rather than a static Tune param_space) is what lets a parameter be drawn
only when it applies, e.g. a hidden width only for an MLP head.
"""

from __future__ import annotations

from typing import Any

import optuna

from leuktune.config import CONDITIONAL, Choice, Distribution, ExperimentConfig, IntRange, LogUniform, Uniform


def suggest(trial: optuna.Trial, name: str, dist: Distribution) -> Any:
    if isinstance(dist, Choice):
        return trial.suggest_categorical(name, dist.choice)
    if isinstance(dist, LogUniform):
        return trial.suggest_float(name, *dist.loguniform, log=True)
    if isinstance(dist, Uniform):
        return trial.suggest_float(name, *dist.uniform)
    if isinstance(dist, IntRange):
        return trial.suggest_int(name, *dist.int_)
    raise TypeError(f"{name}: not a distribution: {dist!r}")


class DefineByRun:
    """A picklable space function (Tune checkpoints its searcher, closures do not pickle)."""

    def __init__(self, cfg: ExperimentConfig):
        self.searched = cfg.searched()
        # Fixed values of condition fields (e.g. head: mlp, not searched) decide too.
        self.fixed = {parent: getattr(cfg.model, parent) for parent, _ in CONDITIONAL.values()
                      if parent not in self.searched}

    def __call__(self, trial: optuna.Trial) -> None:
        drawn: dict[str, Any] = dict(self.fixed)
        for name, dist in self.searched.items():
            condition = CONDITIONAL.get(name)
            if condition and drawn.get(condition[0]) != condition[1]:
                continue
            drawn[name] = suggest(trial, name, dist)
