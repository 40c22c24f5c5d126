"""The experiment's searched fields -> an Optuna define-by-run space for Ray Tune's OptunaSearch.

Define-by-run (rather than a static Tune param_space) is what lets a parameter be drawn
only when it applies, e.g. a hidden width only for an MLP head (``When`` in the schema).
"""

from __future__ import annotations

from typing import Any

from leuktune.config import CONDITIONS, ExperimentConfig


class DefineByRun:
    """A picklable space function (Tune checkpoints its searcher; closures do not pickle)."""

    def __init__(self, cfg: ExperimentConfig):
        self.searched = cfg.searched()
        # Fixed values of condition fields (e.g. head: mlp, not searched) decide too.
        self.fixed = {c.parent: cfg.value(c.parent) for c in CONDITIONS.values() if c.parent not in self.searched}

    def __call__(self, trial) -> None:
        drawn: dict[str, Any] = dict(self.fixed)
        for name, dist in self.searched.items():
            condition = CONDITIONS.get(name)
            if condition and not condition.holds(drawn.get(condition.parent)):
                continue
            drawn[name] = dist.suggest(trial, name)
