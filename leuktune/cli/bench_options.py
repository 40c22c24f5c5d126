"""What every benchmark of ``python -m leuktune.bench`` is made of (``Bench``: one parser and the
function it runs), and the options several benchmarks share."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Bench:
    """One benchmark of the command line (``python -m leuktune.bench <name>``)."""

    summary: str  # what it measures: its line in the list, and its --help
    examples: tuple[str, ...]  # its arguments in commands that run as written ("" for none)
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict | None]


def launcher(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--launcher", default="auto", choices=["auto", "tune", "train"], help=text)


def overrides(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides", help=text)


def searches(parser: argparse.ArgumentParser, trials: int, workdir: str, seeds: bool = True) -> None:
    """The options every benchmark made of whole searches shares."""
    parser.add_argument("--trials", type=int, default=trials, help="trials per search")
    if seeds:
        parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds, one search each")
    parser.add_argument("--workdir", default=workdir, help="where the runs are written")
    overrides(parser, "override the built-in experiment (repeatable)")


def has_tabulate() -> bool:
    """Whether pandas can write Markdown tables here (it needs tabulate)."""
    try:
        import tabulate  # noqa: F401 - pandas' to_markdown needs it; a plain table without
        return True
    except ImportError:
        return False
