"""Benchmarks whose figures go into issue notes; timings live here, never in tests.

    python -m leuktune.bench models                 # every named backbone: params, features, groups, img/s
    python -m leuktune.bench models --backbones resnet50 vgg16 --image-size 224 --batch 8
    python -m leuktune.bench cache                  # decode-once cache vs decoding files each epoch
    python -m leuktune.bench decode --root s3://bucket/cells --address auto   # the decode pass on a cluster
    python -m leuktune.bench trial-overhead         # seconds per trial outside its epochs, vs plain Tune trials
    python -m leuktune.bench trial-overhead --launcher train --trials 4
    python -m leuktune.bench gpu-occupancy          # on a GPU machine: GPU busy fraction over a real search
    python -m leuktune.bench signal                 # do early epochs foretell the end? Kendall tau per rung
    python -m leuktune.bench searchers              # random, TPE, GP, with and without ASHA, 3 seeds
    python -m leuktune.bench external               # stain augmentation / normalisation vs another site
    python -m leuktune.bench selection --sets builtin /data/cells   # the search's pick vs one default trial
    python -m leuktune.bench features               # head trials over a frozen backbone, features cached or not
    python -m leuktune.bench throughput             # bare PyTorch loop vs leuktune's trainer (CPU: tiny, 64px)
    python -m leuktune.bench throughput --backbone resnet50 --image-size 224 --batch 64   # on a GPU
    python -m leuktune.bench throughput --backbone resnet50 --image-size 224 --batch 128 --compile
"""

from __future__ import annotations

import argparse

import torch

from leuktune.bench.strategies import EXTERNAL_VARIANTS, SELECTION_VARIANTS, STRATEGIES, VARIANTS
from leuktune.errors import command


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option, examples kept as written."""


def _command(sub, name: str, summary: str, *examples: str) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it measures and shows commands that run as written."""
    epilog = "examples:\n" + "\n".join(f"  python -m leuktune.bench {name} {e}".rstrip() for e in examples)
    return sub.add_parser(name, help=summary, description=summary, epilog=epilog, formatter_class=_Help)


def _searches(command: argparse.ArgumentParser, trials: int, workdir: str, seeds: bool = True) -> None:
    """The options every benchmark made of whole searches shares."""
    command.add_argument("--trials", type=int, default=trials, help="trials per search")
    if seeds:
        command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds, one search each")
    command.add_argument("--workdir", default=workdir, help="where the runs are written")
    command.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                         help="override the built-in experiment (repeatable)")


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    models = _command(sub, "models", "forward+backward speed and shape of each backbone",
                      "", "--backbones resnet50 vgg16 --image-size 224 --batch 8")
    models.add_argument("--backbones", nargs="+", default=None, help="timm or leuktune names; None: every named backbone")
    models.add_argument("--image-size", type=int, default=224, help="pixels per side")
    models.add_argument("--batch", type=int, default=8, help="images per step")
    models.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    caching = _command(sub, "cache", "epoch read from the decode-once cache vs decoding files", "",
                       "--images 500 --workdir /tmp/bench-cache")
    caching.add_argument("--workdir", default="runs/bench-cache", help="where the image files and cache go")
    caching.add_argument("--images", type=int, default=2000, help="image files written")
    caching.add_argument("--source-size", type=int, default=256, help="pixels per side of each file")
    caching.add_argument("--image-size", type=int, default=224, help="pixels per side after decoding")
    caching.add_argument("--batch", type=int, default=64, help="images per batch read")
    decoding = _command(sub, "decode", "the decode pass of a class folder (local, NFS or a bucket) on the cluster in "
                        "sight: leuktune's Ray tasks vs Ray Data's reader, seconds per 1000 images and what each node "
                        "read", "--root runs/bench-cache/set", "--root s3://my-bucket/cells --address auto --engines tasks")
    decoding.add_argument("--root", required=True, help="a class folder: local, NFS or s3://, gs://")
    decoding.add_argument("--image-size", type=int, default=128, help="pixels per side after decoding")
    decoding.add_argument("--engines", nargs="+", default=["tasks", "data"], choices=["tasks", "data"])
    decoding.add_argument("--address", help="the Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    speed = _command(sub, "throughput", "bare PyTorch loop vs leuktune's trainer, same model and batch",
                     "", "--backbone resnet50 --image-size 224 --batch 64      # on a GPU",
                     "--backbone resnet50 --image-size 224 --batch 128 --compile")
    speed.add_argument("--backbone", default="test_resnet")
    speed.add_argument("--image-size", type=int, default=64)
    speed.add_argument("--batch", type=int, default=32)
    speed.add_argument("--images", type=int, default=2048, help="training images per epoch")
    speed.add_argument("--epochs", type=int, default=4)
    speed.add_argument("--device", default="auto", help="auto (GPU when there is one) | cpu | cuda")
    speed.add_argument("--threads", type=int, default=torch.get_num_threads(),
                       help="CPU threads for both loops (= the trainer's cpus_per_worker)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    speed.add_argument("--launcher", default="auto", choices=["auto", "tune", "train"],
                       help="how leuktune's trial starts (resources.launcher)")
    overhead = _command(sub, "trial-overhead",
                        "seconds per trial outside its epochs, through the real search path on the built-in set, "
                        "against the same trials as plain Tune function trials (the floor)",
                        "", "--launcher train --trials 4")
    overhead.add_argument("--trials", type=int, default=8, help="trials in each search")
    overhead.add_argument("--concurrent", type=int, default=2, help="trials at a time")
    overhead.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    overhead.add_argument("--launcher", default="auto", choices=["auto", "tune", "train"],
                          help="how each trial starts its loop (resources.launcher)")
    overhead.add_argument("--workdir", default="runs/bench-overhead", help="where the runs are written")
    overhead.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                          help="override the built-in experiment (repeatable)")
    occupancy = _command(sub, "gpu-occupancy",
                         "how busy the GPU is (NVML, each second) over a real search of a synthetic class folder, "
                         "also split by whether every trial slot was taken (trials too small for the GPU vs "
                         "idle slots while the last trials finish); each second's figure is kept in "
                         "<workdir>/<run>.gpu.json; needs a GPU machine", "", "--trials 16 --trials-per-gpu 8 --set train.batch_size=128")
    occupancy.add_argument("--images", type=int, default=3000, help="images in the synthetic class folder")
    occupancy.add_argument("--image-size", type=int, default=128, help="pixels per side")
    occupancy.add_argument("--backbone", default="resnet50", help="timm backbone every trial trains")
    occupancy.add_argument("--trials", type=int, default=8)
    occupancy.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    occupancy.add_argument("--trials-per-gpu", type=int, default=4, help="trials sharing one GPU")
    occupancy.add_argument("--workdir", default="runs/bench-occupancy", help="where images and runs are written")
    occupancy.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                           help="override the search (repeatable), e.g. --set resources.launcher=train")
    searchers = _command(sub, "searchers",
                         "random, TPE (Optuna's 10 start-up trials, and leuktune's auto), GP, each with and "
                         "without ASHA, on the harder built-in set, several seeds: best val score against "
                         "cumulative trial-seconds, and the Kendall tau of rung vs final scores",
                         "", "--strategies tpe-auto+asha random --trials 20 --seeds 0 1 2")
    searchers.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                           help="searchers to compare (the first without +asha is the budget of reference)")
    _searches(searchers, 30, "runs/bench-searchers")
    signal = _command(sub, "signal",
                      "trials run to the end (random draws, no early stopping) on the harder built-in set under "
                      "each training variant: Kendall tau of each ASHA score (last, best, smoothed) at each "
                      "rung against the final score", "",
                      "--variant before train.bn_refresh=0 --variant after --trials 16 --seeds 0 1")
    signal.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"), dest="variants",
                        help=f"a name and its settings (repeatable); default: {VARIANTS}")
    _searches(signal, 16, "runs/bench-signal")
    external = _command(sub, "external",
                        "the built-in set searched with and without stain augmentation and normalisation; each "
                        "search's best trial and ensemble on its own test split and on the synthetic second site",
                        "", "--trials 4 --variants plain 'stain augmentation' --set data.synthetic.difficulty=0.5")
    external.add_argument("--variants", nargs="+", default=list(EXTERNAL_VARIANTS), choices=list(EXTERNAL_VARIANTS))
    _searches(external, 4, "runs/bench-external", seeds=False)
    feats = _command(sub, "features", "head trials (linear, mlp, logistic, knn) over one frozen backbone on the "
                     "built-in set, with its features cached once (model.feature_cache auto) and without (off): wall "
                     "time, trial-seconds, backbone passes, the best validation score", "",
                     "--backbones resnet50@128 vit_small_patch14_dinov2@112 --trials 16 --epochs 5")
    feats.add_argument("--backbones", nargs="+", default=["resnet50@128", "vit_small_patch14_dinov2@112"],
                       help="backbone@image_size, each searched over")
    feats.add_argument("--epochs", type=int, default=5, help="epochs of each trained head")
    feats.add_argument("--seed", type=int, default=0, help="the sampler's and the trials' seed, both runs")
    feats.add_argument("--caches", nargs="+", default=["auto", "off"], choices=["auto", "off"],
                       help="model.feature_cache of the runs")
    _searches(feats, 16, "runs/bench-features", seeds=False)
    selection = _command(sub, "selection",
                         "how a search chooses its model (the best epoch as before, with epoch ties broken, the "
                         "last epoch) against one default-recipe trial's last epoch: test balanced accuracy and "
                         "trial-seconds on the harder built-in set with a small validation split and on real sets "
                         "(class folders, or CSV/Parquet manifests with path, label, group)",
                         "--sets builtin --trials 4 --seeds 0", "--sets builtin /data/wbc /data/rbc.csv --seeds 0 1 2")
    selection.add_argument("--sets", nargs="+", default=["builtin"],
                           help="builtin, a class folder or a manifest (path, label[, group]); each searched alike")
    selection.add_argument("--variants", nargs="+", default=list(SELECTION_VARIANTS), choices=list(SELECTION_VARIANTS))
    _searches(selection, 6, "runs/bench-selection")
    args = parser.parse_args(argv)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.what == "searchers":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.searchers import bench_searchers

        bench_searchers(args.strategies, args.trials, args.seeds, args.workdir, args.overrides)
        return 0
    if args.what == "features":
        # the search and its bench only when asked for
        from leuktune.bench.features import bench_features

        bench_features(args.backbones, args.trials, args.epochs, args.seed, args.workdir, args.overrides,
                       tuple(args.caches))
        return 0
    if args.what == "selection":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.selection import bench_selection

        bench_selection(args.sets, args.variants, args.trials, args.seeds, args.workdir, args.overrides)
        return 0
    if args.what == "external":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.external import bench_external

        bench_external(args.trials, args.workdir, args.overrides, args.variants)
        return 0
    if args.what == "signal":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.searchers import bench_signal

        variants = {name: settings for name, *settings in args.variants} if args.variants else VARIANTS
        bench_signal(variants, args.trials, args.seeds, args.workdir, args.overrides)
        return 0
    if args.what == "gpu-occupancy":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.occupancy import bench_gpu_occupancy

        for key, value in bench_gpu_occupancy(args.images, args.image_size, args.backbone, args.trials, args.epochs,
                                              args.trials_per_gpu, args.workdir, args.overrides).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "trial-overhead":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.overhead import bench_trial_overhead

        bench_trial_overhead(args.trials, args.concurrent, args.epochs, args.launcher, args.workdir, args.overrides)
        return 0
    if args.what == "throughput":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.throughput import bench_throughput

        for key, value in bench_throughput(args.backbone, args.image_size, args.batch, args.images, args.epochs,
                                           args.device, args.threads, args.compile, args.launcher).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "decode":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.decode import bench_decode

        for key, value in bench_decode(args.root, args.image_size, args.engines, args.address).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "cache":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        from leuktune.bench.cache import bench_cache

        for key, value in bench_cache(args.workdir, args.images, args.source_size, args.image_size,
                                      args.batch).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "models":
        # each benchmark's modules only when it runs (some import Ray, some torch)
        import pandas as pd

        from leuktune.bench.models import NAMED_BACKBONES, bench_models

        rows = bench_models(args.backbones or NAMED_BACKBONES, args.image_size, args.batch, args.steps)
        print(f"\nCPU, {torch.get_num_threads()} threads, batch {args.batch}, {args.image_size}px\n")
        print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(rows).to_string(index=False))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False
