"""``leuktune.search``: the whole search, from an experiment to its ranked leaderboard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd


class SearchError(RuntimeError):
    """A search that ran but produced no result to rank."""


def _print(message: str) -> None:
    # Tune pickles the callbacks that echo; Ray patches the driver's print, which then does not
    # pickle, so the default echo is this module-level function rather than print itself.
    print(message, flush=True)


def search(config: str | Path | None = None, overrides: Sequence[str] = (), *, address: str | None = None,
           echo: Callable[[str], None] = _print) -> pd.DataFrame:
    """Run a search and return its leaderboard, best trial first.

    ``config`` is an experiment file, an ``ExperimentConfig``, or None for the built-in
    experiment (a synthetic blood-smear set, on the CPU, in minutes); ``overrides`` are
    ``KEY=VALUE`` strings as ``--set`` takes them. Ray is the one this process is connected
    to, else ``address`` (default ``RAY_ADDRESS``, else a local Ray started for the search).
    A bad configuration raises ``ConfigError`` and bad data ``DataError``, both before any
    trial starts.

    >>> import leuktune
    >>> board = leuktune.search(overrides=["search.num_samples=2"])  # doctest: +SKIP
    >>> board[["trial_id", "backbone", "val_balanced_accuracy"]].head()  # doctest: +SKIP
    """
    # Imported here so that a configuration error costs a second, not a Ray start.
    from leuktune.config import load
    from leuktune.models.build import check_model_space
    from leuktune import runfolder
    from leuktune.runfolder import RunFolder
    from leuktune.search.searcher import with_grid_size

    cfg = with_grid_size(load(config, overrides))
    check_model_space(cfg)
    cfg = RunFolder.resolved(cfg)
    folder = RunFolder.of(cfg)
    folder.write_text(runfolder.CONFIG, cfg.to_yaml())
    echo(f"[leuktune] experiment {cfg.name!r}: searching {', '.join(cfg.searched()) or 'nothing'}; "
         f"{cfg.search.num_samples} trial(s), run folder {folder.uri()}")

    from leuktune import leaderboard
    from leuktune.runtime import ray_session

    with ray_session(address):
        run_trials(cfg, echo)
    try:
        return leaderboard.load(folder.uri())
    except leaderboard.LeaderboardError:
        raise SearchError(f"no trial of {cfg.name!r} finished; see the Ray output above") from None


def run_trials(cfg, echo: Callable[[str], None] = _print, callbacks: tuple = ()):
    """Prepare the data and run every trial of a validated, resolved config on the Ray this
    process is connected to; Tune's ResultGrid. ``callbacks`` are extra Tune callbacks."""
    from leuktune.data.prepare import prepare
    from leuktune.runfolder import RunFolder
    from leuktune.search.tuner import build_tuner

    started = time.monotonic()
    data, report = prepare(cfg, progress=echo)
    echo("[leuktune] data: " + str(report))
    echo(f"[leuktune] data ready at {cfg.data.image_size}px in {time.monotonic() - started:.1f}s")
    return build_tuner(cfg, data, RunFolder.of(cfg), echo=echo, callbacks=callbacks).fit()
