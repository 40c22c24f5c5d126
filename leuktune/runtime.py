"""One way into Ray for every entry point (search, data check, evaluation, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Callable, Iterator
from urllib.parse import urlsplit

from leuktune import internals
from leuktune.errors import LeuktuneError

ANSWER_TIMEOUT_S = 5.0


class ClusterUnreachable(LeuktuneError, ConnectionError):
    """A Ray address that was asked for and does not answer, naming it."""


def echo(message: str) -> None:
    """The default progress printer. Tune pickles the callbacks that echo; Ray patches the
    driver's print, which then does not pickle, so callers pass this module-level function."""
    print(message, flush=True)


def answers(address: str, timeout: float = ANSWER_TIMEOUT_S) -> bool:
    """Whether something listens at a Ray address (``host:port``, ``ray://host:port``, ...) within
    ``timeout`` seconds: a head that died leaves a closed port, which refuses at once."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except (OSError, ValueError, TypeError):  # refused, unreachable, timed out, no port in the address
        return False


def choose_address(address: str | None = None, echo: Callable[[str], None] = echo) -> str:
    """The Ray to use, decided explicitly (``ray.init(address=None)`` would join whatever cluster
    the machine's file of the latest ``ray start`` names, and wait ten minutes for a dead one):

    - ``address``, else ``RAY_ADDRESS``: that cluster, which must answer within a few seconds
      (``auto``: the local cluster the file names, which must answer);
    - else the local cluster that ``ray start`` recorded, if it answers (said in one line);
    - else a new local Ray (``"local"``), with a line when a dead cluster's file was ignored.
    """
    wanted = address or os.environ.get("RAY_ADDRESS") or None
    if wanted not in (None, "auto"):
        if not answers(wanted):
            raise ClusterUnreachable(f"the Ray cluster at {wanted} (--address or RAY_ADDRESS) does not answer within "
                                     f"{ANSWER_TIMEOUT_S:g} s: is its head running? Leave both unset to start a local "
                                     "Ray")
        return wanted
    recorded, file = internals.ray_recorded_cluster()
    if recorded and answers(recorded):
        echo(f"[leuktune] using the local Ray cluster at {recorded} (recorded by `ray start` in {file}; "
             "--address or RAY_ADDRESS chooses another)")
        return recorded
    if wanted == "auto":
        raise ClusterUnreachable(f"address 'auto': no running Ray cluster on this machine ({file} names "
                                 f"{recorded or 'none'})")
    if recorded:
        echo(f"[leuktune] {file} names a Ray cluster at {recorded} that does not answer (its head is gone): "
             "ignored; starting a new local Ray")
    return "local"


@contextlib.contextmanager
def ray_session(address: str | None = None, echo: Callable[[str], None] = echo, **init_options) -> Iterator[None]:
    """Ray for the duration of the block.

    Uses the Ray this process is already connected to (a notebook, a test, a Ray job's driver);
    otherwise the one ``choose_address`` decides, and shuts down on leaving only what it started.
    ``init_options`` go to ``ray.init``; those that size a new local Ray (``num_cpus``,
    ``num_gpus``) are left out when joining a running cluster. Leave the dashboard on (Ray's
    default): Train V2 frees finished trials' placement groups through the state API that it serves.
    """
    # Ray only when a command needs a cluster (runtime is imported by every command line)
    import ray

    if ray.is_initialized():
        yield
        return
    chosen = choose_address(address, echo)
    if chosen != "local":
        init_options = {k: v for k, v in init_options.items() if k not in ("num_cpus", "num_gpus")}
    init_options.setdefault("logging_level", logging.WARNING)
    ray.init(address=chosen, **init_options)
    try:
        yield
    finally:
        ray.shutdown()
