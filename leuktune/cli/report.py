"""``python -m leuktune.report``: the report of one run, or of several merged."""

from __future__ import annotations

import argparse

from leuktune.errors import command

EXAMPLES = """\
examples:
  python -m leuktune.report runs/synthetic-default                 # -> runs/synthetic-default/report/
  python -m leuktune.report runs/cnmc-a runs/cnmc-b --out reports/cnmc
  python -m leuktune.report s3://my-bucket/leuktune/cnmc-binary --out report-cnmc
"""


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.report", epilog=EXAMPLES,
                                     description="Markdown and a self-contained HTML report (tables and figures) "
                                     "of a search: top trials, the best per backbone/head/activation/unfreeze "
                                     "depth, importance, learning curves, the test split, the data.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_LEADERBOARD",
                        help="a run folder or its leaderboard.parquet (local or a URI); several are merged")
    parser.add_argument("--out", help="output folder (default: <run>/report for a local run)")
    args = parser.parse_args(argv)
    # imported after the arguments are parsed: --help answers at once, without torch or Ray
    from leuktune.leaderboard import run_folder
    from leuktune.run import Run

    first, *others = (run_folder(location) for location in args.runs)
    path = Run(first).report(out=args.out, compare=tuple(others))
    print(f"[leuktune] report: {path} and {path.with_suffix('.md')}")
    return 0
