"""``python -m leuktune.search``: argument parsing and printing over ``leuktune.search``."""

from __future__ import annotations

import argparse
import time

from leuktune.errors import command

EXAMPLES = """\
examples:
  # first contact: the built-in synthetic blood-smear set, on this machine's CPU, a few minutes
  python -m leuktune.search

  # an experiment file, with overrides
  python -m leuktune.search --config experiments/default.yaml --set search.num_samples=8 --set train.epochs=5

  # your own class-folder images
  python -m leuktune.search --set data.source=imagefolder --set data.root=/data/blood-cells --set name=my-cells

  # check a file: the resolved space, resources, trials at once, the data; nothing is started
  python -m leuktune.search --config experiments/cnmc.yaml --dry-run

  # continue a search whose driver was killed or whose cluster was lost
  python -m leuktune.search --config experiments/default.yaml --resume

  # on a Ray cluster (storage should be shared by all nodes, e.g. s3:// or NFS)
  ray job submit --working-dir . -- python -m leuktune.search --config experiments/default.yaml

The run's folder <storage.path>/<name>/ receives config.yaml, split.parquet,
trials.parquet and leaderboard.parquet (a row per trial), history.parquet (a row per
trial-epoch) and the trials' checkpoints; it can be copied or moved and still opens
(python -m leuktune.report/evaluate/predict/export, or leuktune.Run.open(path)).
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m leuktune.search",
        description="Search backbones, heads and training hyperparameters for a blood-smear "
        "image classifier with Ray Tune (Optuna + ASHA) and Ray Train.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="experiment YAML (default: the built-in synthetic experiment)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one config key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted search of this run folder (its own config.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and show the space, resources, concurrency and data; start nothing")
    parser.add_argument("--top", type=int, default=5, help="leaderboard rows to print at the end (default 5)")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after the arguments are parsed: --help answers at once, without torch or Ray
    from leuktune import leaderboard
    from leuktune.config import load
    from leuktune.results import TrialStatus
    from leuktune.tuning.driver import search

    if args.dry_run:
        # imported after the arguments are parsed: --help answers at once, without torch or Ray
        from leuktune.tuning.dryrun import dry_run

        print(dry_run(args.config, args.overrides, args.address))
        return 0
    started = time.monotonic()
    cfg = load(args.config, args.overrides)
    board = search(cfg, address=args.address, resume=args.resume)
    shown = ["trial_id", "status", *cfg.searched(), "kept_epoch", "epochs_run",
             "val_balanced_accuracy", "val_accuracy", "val_f1_weighted", cfg.search.metric]
    shown = list(dict.fromkeys(c for c in shown if c in board.columns))
    print(f"\n[leuktune] leaderboard: {', '.join(board.attrs['paths'])}  ({len(leaderboard.trial_rows(board))} trials, "
          f"{time.monotonic() - started:.0f}s)\n")
    print(board[shown].head(args.top).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0 if (board["status"] != TrialStatus.ERROR).any() else 1
