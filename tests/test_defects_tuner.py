"""A search interrupted (Ctrl+C) and resumed through ``build_tuner(resume=True)``: the resumed
search speaks through the caller's echo, callbacks and followers, not those of the search it resumes."""

from __future__ import annotations

import os
import signal

import pytest
from ray import tune

from leuktune.runfolder import RunFolder
from leuktune.tuning.tuner import build_tuner
from test_trainer import _trial, tiny_data  # noqa: F401 - tiny_data: a fixture

pytestmark = pytest.mark.slow


class Interrupt(tune.Callback):
    """Ctrl+C once the first trial has ended: Tune saves the search, to be resumed."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        os.kill(os.getpid(), signal.SIGINT)


class Ended(tune.Callback):
    def __init__(self):
        self.ended = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended.append(trial.trial_id)


class Follower:
    """A tracker as leuktune.tracking's followers are: told each trial's start, epochs and end."""

    def __init__(self):
        self.events = []

    def trial_started(self, trial_id, drawn):
        self.events.append(("started", trial_id))

    def epoch(self, trial_id, report):
        self.events.append(("epoch", trial_id))

    def trial_ended(self, record):
        self.events.append(("ended", record.trial_id))

    def close(self):
        self.events.append(("closed", None))


def test_a_resumed_search_speaks_through_the_callers_echo_callbacks_and_followers(tiny_data):
    cfg, data = tiny_data
    cfg = _trial(cfg, "resumed-tuner")
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"num_samples": 2, "max_concurrent": 1})})
    folder = RunFolder.of(cfg)
    before: list[str] = []
    build_tuner(cfg, data, folder, echo=before.append, callbacks=(Interrupt(),), followers=[Follower()]).fit()
    assert folder.exists("trials.parquet") and any("epoch 1/2" in line for line in before)

    lines, ended, follower = [], Ended(), Follower()
    results = build_tuner(cfg, data, folder, echo=lines.append, callbacks=(ended,), resume=True,
                          followers=[follower]).fit()
    assert not results.errors and len(results) == 2
    assert len(ended.ended) == 1, "the caller's callback was not told of the trial the resumed search ran"
    assert any("epoch 2/2" in line for line in lines), "the caller's echo heard nothing of the resumed search"
    assert ("ended", ended.ended[0]) in follower.events and follower.events[-1] == ("closed", None)
