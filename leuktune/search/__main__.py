"""``python -m leuktune.search``: validate the experiment, prepare the data once, run the search."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

EXAMPLES = """\
examples:
  # first contact: the built-in synthetic blood-smear set, on this machine's CPU, a few minutes
  python -m leuktune.search

  # an experiment file, with overrides
  python -m leuktune.search --config experiments/default.yaml --set search.num_samples=8 --set train.epochs=5

  # your own class-folder images
  python -m leuktune.search --set data.source=imagefolder --set data.root=/data/blood-cells --set name=my-cells

  # on a Ray cluster (storage should be shared by all nodes, e.g. s3:// or NFS)
  ray job submit --working-dir . -- python -m leuktune.search --config experiments/default.yaml

The run's folder <storage.path>/<name>/ receives config.yaml, split.parquet,
leaderboard.parquet (a row per trial), history.parquet (a row per trial-epoch) and
the trials' checkpoints.
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
    parser.add_argument("--top", type=int, default=5, help="leaderboard rows to print at the end (default 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Validate before importing Ray/torch: a typo costs a second, not a cluster start.
    from leuktune.config import ConfigError, load

    try:
        cfg = load(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from leuktune.models.build import check_model_space

    try:
        check_model_space(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import ray

    from leuktune import leaderboard
    from leuktune.data.prepare import prepare
    from leuktune.data.sources import DataError
    from leuktune.search.tuner import build_tuner

    storage = Path(cfg.storage.path).expanduser().resolve()
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"path": str(storage)})})
    run_dir = storage / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    print(f"[leuktune] experiment {cfg.name!r}: searching {', '.join(cfg.searched()) or 'nothing'}; "
          f"{cfg.search.num_samples} trial(s), run folder {run_dir}", flush=True)

    owns_ray = not ray.is_initialized()  # a notebook or test may have started Ray already
    if owns_ray:
        ray.init(address=args.address, logging_level=logging.WARNING)
    try:
        t0 = time.monotonic()
        try:
            data, report = prepare(cfg)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("[leuktune] data: " + "\n".join(report.lines()), flush=True)
        print(f"[leuktune] data ready at {cfg.data.image_size}px in {time.monotonic() - t0:.1f}s", flush=True)
        build_tuner(cfg, data, run_dir).fit()
    finally:
        if owns_ray:
            ray.shutdown()

    board_path = run_dir / leaderboard.LEADERBOARD
    if not board_path.is_file():
        print("error: no trial finished; see the Ray output above", file=sys.stderr)
        return 1
    board = leaderboard.ranked(leaderboard.read(run_dir), cfg.search.metric, cfg.search.mode)
    shown = ["trial_id", "status", *cfg.searched(), "best_epoch", "epochs_run",
             "val_balanced_accuracy", "val_accuracy", "val_f1_weighted"]
    shown = list(dict.fromkeys(c for c in shown + [cfg.search.metric] if c in board.columns))
    print(f"\n[leuktune] leaderboard: {board_path}  ({len(board)} trials, "
          f"{time.monotonic() - t0:.0f}s)\n")
    print(board[shown].head(args.top).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0 if (board["status"] != "error").any() else 1


if __name__ == "__main__":
    sys.exit(main())
