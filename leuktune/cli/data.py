"""``python -m leuktune.data``: check a dataset without training.

Counts per class and split (and per site, class and split), groups (patients) and those
spanning sites, bad files, exact and near duplicates;
exits 2 on a problem that would stop a search. The decoded images are cached, so the
search that follows decodes nothing. Nothing is written into the run folder; ``--out DIR``
writes the check's tables there (split.parquet, rejected.parquet, near_duplicates.parquet).
"""

from __future__ import annotations

import argparse

from leuktune.errors import command

EXAMPLES = """\
examples:
  python -m leuktune.data                                   # the built-in synthetic set
  python -m leuktune.data --config experiments/default.yaml
  python -m leuktune.data --set data.source=cnmc --set data.root=/data/C-NMC_Leukemia --set name=cnmc
  python -m leuktune.data --config experiments/cnmc.yaml --out checked/   # and its tables, as Parquet
"""


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.data", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="experiment YAML (default: the built-in experiment)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one config key (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="write the split, rejected and near-duplicate tables "
                        "(Parquet) into this folder, local or a URI")
    args = parser.parse_args(argv)

    # imported after the arguments are parsed: --help answers at once, without torch or Ray
    from leuktune.data.check import check_data

    print(check_data(args.config, args.overrides, out=args.out))
    return 0
