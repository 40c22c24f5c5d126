"""``python -m leuktune.export``: argument parsing and printing over ``leuktune.Run.export``."""

from __future__ import annotations

import argparse

from leuktune.errors import command
from leuktune.exporting import FORMATS, __doc__ as DESCRIPTION

EXAMPLES = """\
examples:
  python -m leuktune.export --run runs/synthetic-default --format onnx
  python -m leuktune.export --run runs/cnmc-binary --trial 3f2a9c1e --format torchscript --out exports/cnmc
  python -m leuktune.export --run runs/synthetic-default --trial ensemble
  python -m leuktune.export --run runs/synthetic-default --adapted lab-b --per-class 10
"""


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.export", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the run folder (<storage.path>/<name>), local or a URI")
    parser.add_argument("--adapted", metavar="NAME", help="the model adapted to this lab (python -m leuktune.adapt)")
    parser.add_argument("--per-class", type=int, metavar="N", help="with --adapted: the one adapted with N labelled "
                        "cells a class (default: the most)")
    parser.add_argument("--trial", help="the trial id, or ensemble (one graph averaging the weighted ensemble's "
                        "members); default: the run's best trial")
    parser.add_argument("--format", default="onnx", choices=list(FORMATS))
    parser.add_argument("--out", help="output folder (default: <run>/export/<trial> for a local run)")
    args = parser.parse_args(argv)
    # imported after the arguments are parsed: --help answers at once, without Ray
    from leuktune.run import Run

    path = Run.open(args.run).export(trial=args.trial, format=args.format, out=args.out, adapted=args.adapted,
                                     per_class=args.per_class)
    what = (args.trial or "the best trial") + (f" adapted to {args.adapted}" if args.adapted else "")
    print(f"[leuktune] {what} exported to {path} with {path.parent / 'preprocessing.json'}")
    return 0

