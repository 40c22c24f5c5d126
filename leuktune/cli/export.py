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
"""


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.export", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the run folder (<storage.path>/<name>), local or a URI")
    parser.add_argument("--trial", help="the trial id, or ensemble (one graph averaging the weighted ensemble's "
                        "members); default: the run's best trial")
    parser.add_argument("--format", default="onnx", choices=list(FORMATS))
    parser.add_argument("--out", help="output folder (default: <run>/export/<trial> for a local run)")
    args = parser.parse_args(argv)
    # imported after the arguments are parsed: --help answers at once, without Ray
    from leuktune.run import Run

    path = Run.open(args.run).export(trial=args.trial, format=args.format, out=args.out)
    print(f"[leuktune] {args.trial or 'the best trial'} exported to {path} with {path.parent / 'preprocessing.json'}")
    return 0

