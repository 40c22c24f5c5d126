"""The one family of leuktune's errors: every mistake leuktune reports on purpose is a
``LeuktuneError``, so a caller (each command line here) catches the family and a bug stays a
bug (a traceback), as Optuna's ``OptunaError`` does.

Each member is defined by the module that owns what went wrong, and keeps the built-in
error it has always been (``ConfigError`` is also a ``ValueError``), so older callers that
catch those still do:

- ``ConfigError`` (leuktune.config): an experiment file, key or ``--set`` that is not valid;
- ``DataError``, ``BadImage`` (leuktune.data): a dataset that cannot be read as asked;
- ``WeightsError``, ``BackboneError`` (leuktune.models): a backbone that cannot be built;
- ``CheckpointError`` (leuktune.training.checkpoint): a checkpoint that is missing or does not
  fit the data it is asked to score;
- ``LeaderboardError`` (leuktune.leaderboard): no readable leaderboard where one is named;
- ``RunFolderError`` (leuktune.runfolder): a location that holds no run;
- ``FolderInUse`` (leuktune.runfolder.lock): a run folder a live search holds;
- ``ClusterUnreachable`` (leuktune.runtime): a Ray address that does not answer;
- ``SearchError`` (leuktune.search): a search that cannot run as configured;
- ``StudyError`` (leuktune.study): a study database that cannot be reached, or a run without a study;
- ``TrackingError`` (leuktune.tracking): a tracking server (MLflow) that does not answer;
- ``ExportError`` (leuktune.exporting): an export that cannot be made or does not match PyTorch.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class LeuktuneError(Exception):
    """A mistake leuktune reports with a message for the user (the file, key or address).

    >>> import leuktune
    >>> try:
    ...     leuktune.load_config(None, ["train.epochs=-1"])
    ... except LeuktuneError as err:
    ...     print(f"{type(err).__name__}: ...{str(err).partition('configuration: ')[2]}")
    ConfigError: ...train.epochs: Input should be greater than or equal to 1 (got -1).
    """


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """The one way every command line (``python -m leuktune.<verb>``) ends on a mistake it reports:
    ``error: <message>`` on standard error and exit status 2 (nothing ran: the input is wrong), or
    the error's own ``exit_status`` (a search that ran and failed: 1). Anything else is a bug and
    keeps its traceback."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except LeuktuneError as err:
            print(f"error: {err}", file=sys.stderr)
            return getattr(err, "exit_status", 2)

    return run
