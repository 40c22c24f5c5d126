"""``leuktune <command> ...``: one console script over every command line of leuktune.cli.

Each subcommand hands the rest of its arguments to ``leuktune.cli.<command>.main``, so that
``leuktune search --set train.epochs=5`` and ``python -m leuktune.search --set train.epochs=5``
are one command line (``ray job submit`` keeps the second: it needs no installed script). A
command's module is imported only when it runs, so ``leuktune --help`` answers at once::

    leuktune --help                   # the commands
    leuktune search --dry-run         # = python -m leuktune.search --dry-run
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> what it does; its module is leuktune.cli.<command>, with main(argv) -> exit status
COMMANDS = {
    "search": "search models for a dataset (default: the built-in synthetic set)",
    "data": "check a dataset without training: classes, splits, bad files, duplicates",
    "report": "Markdown and HTML report of one run or several merged",
    "evaluate": "score a run's best trials and their ensemble on the test split or another lab's set",
    "predict": "classify new images with a run's model",
    "export": "a run's model as ONNX or TorchScript, checked against PyTorch",
    "adapt": "a run's model adapted to a new lab with a few of its labelled cells, and the curve",
    "dashboard": "optuna-dashboard on a run's study, while it searches or after",
    "bench": "benchmarks whose figures go into notes (throughput, trial overhead, ...)",
}

EXAMPLES = """\
examples:
  leuktune search --dry-run          # what a search of the built-in set would run; nothing is started
  leuktune search                    # that search, on this machine's CPU, in a few minutes
  leuktune report runs/synthetic-default
  leuktune <command> --help          # a command's options, with examples

each command is also `python -m leuktune.<command>` (ray job submit -- python -m leuktune.search ...)
"""


class _KeepsLines(argparse.RawDescriptionHelpFormatter):
    """The list of commands one a line, as written."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return text.splitlines()


def main(argv: list[str] | None = None) -> int:
    """The console script ``leuktune``: the command line of the command named first."""
    parser = argparse.ArgumentParser(prog="leuktune", epilog=EXAMPLES,
                                     description="Search for the best blood-smear image classifier on Ray, "
                                     "and use what it found.", formatter_class=_KeepsLines)
    parser.add_argument("command", choices=list(COMMANDS), metavar="command",
                        help="one of:\n" + "\n".join(f"{name:<10} {what}" for name, what in COMMANDS.items()))
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the command's own (leuktune <command> --help)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # the command's module only now: each imports what it needs when it runs
    return importlib.import_module(f"leuktune.cli.{args.command}").main(args.arguments)

