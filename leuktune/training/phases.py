"""Where a trial's seconds go: each phase of the loop timed, reported with every epoch.

``python -m leuktune.bench trial-overhead`` adds these up against the trial's wall time as
Tune saw it, so start-up and shut-down costs show up as what is left over.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

# The loop's phases, in the order a trial meets them (leuktune.training.loop times each): together
# they are the trial's time inside its loop. "checkpoint" is what the trial waits for: on a GPU the
# copy of the state to host memory and whatever of the write is left once validation is done; on
# the CPU the write. "features" is a frozen backbone's features computed or loaded (leuktune.training.features).
PHASES = ("data", "build", "features", "restore", "train", "validate", "checkpoint", "report")
# Not in that sum: the checkpoint write itself, wherever it ran (beside validation on a GPU).
BACKGROUND_PHASES = ("checkpoint_write",)


class Phases:
    def __init__(self, launched_at: float | None = None):
        self.started_at = time.time()  # wall clock: compared with Tune's in the driver
        self.launched_at = launched_at or self.started_at  # when the trial asked for its workers
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        """Cumulative seconds per phase so far (reported as ``time_<phase>_s``)."""
        return {phase: round(seconds, 4) for phase, seconds in self.seconds.items()}
