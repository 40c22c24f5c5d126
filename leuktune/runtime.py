"""One way into Ray for every entry point (search, data check, evaluation, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


def echo(message: str) -> None:
    """The default progress printer. Tune pickles the callbacks that echo; Ray patches the
    driver's print, which then does not pickle, so callers pass this module-level function."""
    print(message, flush=True)


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_options) -> Iterator[None]:
    """Ray for the duration of the block.

    Uses the Ray this process is already connected to (a notebook, a test, a Ray job);
    otherwise connects to ``address`` (default: ``RAY_ADDRESS``, else a new local Ray) and
    shuts down on leaving only what it started. ``init_options`` go to ``ray.init``.
    Leave the dashboard on (Ray's default): Train V2 frees finished trials' placement
    groups through the state API that it serves.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    init_options.setdefault("logging_level", logging.WARNING)
    ray.init(address=address, **init_options)
    try:
        yield
    finally:
        ray.shutdown()
