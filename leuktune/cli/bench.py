"""Benchmarks whose figures go into issue notes; timings live here, never in tests.

Each benchmark is one entry of ``BENCHES`` (a ``Bench``, bench_options.py; adapting's in
bench_adapt.py): what it measures, examples that run as written, a function that adds its options
and one that runs it (its modules imported only then: some import Ray, some torch). A benchmark
that returns a dict has it printed one ``key: value`` a line.
"""

from __future__ import annotations

import argparse

import torch

from leuktune.bench.strategies import EXTERNAL_VARIANTS, SELECTION_VARIANTS, STRATEGIES, VARIANTS
from leuktune.cli.bench_adapt import ADAPT, ADAPT_COST
from leuktune.cli.bench_sites import SITES
from leuktune.cli.bench_options import Bench, has_tabulate, launcher, overrides, searches
from leuktune.errors import command


def _models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbones", nargs="+", default=None, help="timm or leuktune names; None: every named backbone")
    parser.add_argument("--image-size", type=int, default=224, help="pixels per side")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")


def _models(args: argparse.Namespace) -> None:
    # each benchmark's modules only when it runs (some import Ray, some torch)
    import pandas as pd

    from leuktune.bench.models import NAMED_BACKBONES, bench_models

    table = pd.DataFrame(bench_models(args.backbones or NAMED_BACKBONES, args.image_size, args.batch, args.steps))
    print(f"\nCPU, {torch.get_num_threads()} threads, batch {args.batch}, {args.image_size}px\n")
    print(table.to_markdown(index=False) if has_tabulate() else table.to_string(index=False))


def _cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/bench-cache", help="where the image files and cache go")
    parser.add_argument("--images", type=int, default=2000, help="image files written")
    parser.add_argument("--source-size", type=int, default=256, help="pixels per side of each file")
    parser.add_argument("--image-size", type=int, default=224, help="pixels per side after decoding")
    parser.add_argument("--batch", type=int, default=64, help="images per batch read")


def _cache(args: argparse.Namespace) -> dict:
    from leuktune.bench.cache import bench_cache  # each benchmark's modules only when it runs

    return bench_cache(args.workdir, args.images, args.source_size, args.image_size, args.batch)


def _decode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="a class folder: local, NFS or s3://, gs://")
    parser.add_argument("--image-size", type=int, default=128, help="pixels per side after decoding")
    parser.add_argument("--engines", nargs="+", default=["tasks", "data"], choices=["tasks", "data"])
    parser.add_argument("--address", help="the Ray cluster (default: RAY_ADDRESS, else a local Ray)")


def _decode(args: argparse.Namespace) -> dict:
    from leuktune.bench.decode import bench_decode  # each benchmark's modules only when it runs

    return bench_decode(args.root, args.image_size, args.engines, args.address)


def _throughput_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="auto", help="auto (GPU when there is one) | cpu | cuda")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for both loops (= the trainer's cpus_per_worker)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    launcher(parser, "how leuktune's trial starts (resources.launcher)")


def _throughput(args: argparse.Namespace) -> dict:
    from leuktune.bench.throughput import bench_throughput  # each benchmark's modules only when it runs

    return bench_throughput(args.backbone, args.image_size, args.batch, args.images, args.epochs, args.device,
                            args.threads, args.compile, args.launcher)


def _overhead_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=8, help="trials in each search")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at a time")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    launcher(parser, "how each trial starts its loop (resources.launcher)")
    parser.add_argument("--workdir", default="runs/bench-overhead", help="where the runs are written")
    overrides(parser, "override the built-in experiment (repeatable)")


def _overhead(args: argparse.Namespace) -> None:
    from leuktune.bench.overhead import bench_trial_overhead  # each benchmark's modules only when it runs

    bench_trial_overhead(args.trials, args.concurrent, args.epochs, args.launcher, args.workdir, args.overrides)


def _occupancy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=3000, help="images in the synthetic class folder")
    parser.add_argument("--image-size", type=int, default=128, help="pixels per side")
    parser.add_argument("--backbone", default="resnet50", help="timm backbone every trial trains")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    parser.add_argument("--trials-per-gpu", type=int, default=4, help="trials sharing one GPU")
    parser.add_argument("--workdir", default="runs/bench-occupancy", help="where images and runs are written")
    overrides(parser, "override the search (repeatable), e.g. --set resources.launcher=train")


def _occupancy(args: argparse.Namespace) -> dict:
    from leuktune.bench.occupancy import bench_gpu_occupancy  # each benchmark's modules only when it runs

    return bench_gpu_occupancy(args.images, args.image_size, args.backbone, args.trials, args.epochs,
                               args.trials_per_gpu, args.workdir, args.overrides)


def _searchers_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                        help="searchers to compare (the first without +asha is the budget of reference)")
    searches(parser, 30, "runs/bench-searchers")


def _searchers(args: argparse.Namespace) -> None:
    from leuktune.bench.searchers import bench_searchers  # each benchmark's modules only when it runs

    bench_searchers(args.strategies, args.trials, args.seeds, args.workdir, args.overrides)


def _signal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"), dest="variants",
                        help=f"a name and its settings (repeatable); default: {VARIANTS}")
    searches(parser, 16, "runs/bench-signal")


def _signal(args: argparse.Namespace) -> None:
    from leuktune.bench.searchers import bench_signal  # each benchmark's modules only when it runs

    variants = {name: settings for name, *settings in args.variants} if args.variants else VARIANTS
    bench_signal(variants, args.trials, args.seeds, args.workdir, args.overrides)


def _external_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", default=list(EXTERNAL_VARIANTS), choices=list(EXTERNAL_VARIANTS))
    searches(parser, 4, "runs/bench-external", seeds=False)


def _external(args: argparse.Namespace) -> None:
    from leuktune.bench.external import bench_external  # each benchmark's modules only when it runs

    bench_external(args.trials, args.workdir, args.overrides, args.variants)


def _features_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbones", nargs="+", default=["resnet50@128", "vit_small_patch14_dinov2@112"],
                        help="backbone@image_size, each searched over")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each trained head")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's and the trials' seed, both runs")
    parser.add_argument("--caches", nargs="+", default=["auto", "off"], choices=["auto", "off"],
                        help="model.feature_cache of the runs")
    searches(parser, 16, "runs/bench-features", seeds=False)


def _features(args: argparse.Namespace) -> None:
    from leuktune.bench.features import bench_features  # each benchmark's modules only when it runs

    bench_features(args.backbones, args.trials, args.epochs, args.seed, args.workdir, args.overrides,
                   tuple(args.caches))


def _selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", nargs="+", default=["builtin"],
                        help="builtin, a class folder or a manifest (path, label[, group]); each searched alike")
    parser.add_argument("--variants", nargs="+", default=list(SELECTION_VARIANTS), choices=list(SELECTION_VARIANTS))
    searches(parser, 6, "runs/bench-selection")


def _selection(args: argparse.Namespace) -> None:
    from leuktune.bench.selection import bench_selection  # each benchmark's modules only when it runs

    bench_selection(args.sets, args.variants, args.trials, args.seeds, args.workdir, args.overrides)


# name -> the benchmark; the list of `python -m leuktune.bench --help` in this order
BENCHES = {
    "models": Bench("forward+backward speed and shape of each backbone",
                    ("", "--backbones resnet50 vgg16 --image-size 224 --batch 8"), _models_arguments, _models),
    "cache": Bench("epoch read from the decode-once cache vs decoding files",
                   ("", "--images 500 --workdir /tmp/bench-cache"), _cache_arguments, _cache),
    "decode": Bench("the decode pass of a class folder (local, NFS or a bucket) on the cluster in sight: leuktune's "
                    "Ray tasks vs Ray Data's reader, seconds per 1000 images and what each node read",
                    ("--root runs/bench-cache/set", "--root s3://my-bucket/cells --address auto --engines tasks"),
                    _decode_arguments, _decode),
    "throughput": Bench("bare PyTorch loop vs leuktune's trainer, same model and batch",
                        ("", "--backbone resnet50 --image-size 224 --batch 64      # on a GPU",
                         "--backbone resnet50 --image-size 224 --batch 128 --compile"),
                        _throughput_arguments, _throughput),
    "trial-overhead": Bench("seconds per trial outside its epochs, through the real search path on the built-in "
                            "set, against the same trials as plain Tune function trials (the floor)",
                            ("", "--launcher train --trials 4"), _overhead_arguments, _overhead),
    "gpu-occupancy": Bench("how busy the GPU is (NVML, each second) over a real search of a synthetic class folder, "
                           "also split by whether every trial slot was taken (trials too small for the GPU vs idle "
                           "slots while the last trials finish); each second's figure is kept in "
                           "<workdir>/<run>.gpu.json; needs a GPU machine",
                           ("", "--trials 16 --trials-per-gpu 8 --set train.batch_size=128"),
                           _occupancy_arguments, _occupancy),
    "searchers": Bench("random, TPE (Optuna's 10 start-up trials, and leuktune's auto), GP, each with and without "
                       "ASHA, on the harder built-in set, several seeds: best val score against cumulative "
                       "trial-seconds, and the Kendall tau of rung vs final scores",
                       ("", "--strategies tpe-auto+asha random --trials 20 --seeds 0 1 2"),
                       _searchers_arguments, _searchers),
    "signal": Bench("trials run to the end (random draws, no early stopping) on the harder built-in set under each "
                    "training variant: Kendall tau of each ASHA score (last, best, smoothed) at each rung against "
                    "the final score",
                    ("", "--variant before train.bn_refresh=0 --variant after --trials 16 --seeds 0 1"),
                    _signal_arguments, _signal),
    "external": Bench("the built-in set searched with and without stain augmentation and normalisation; each "
                      "search's best trial and ensemble on its own test split and on the synthetic second site",
                      ("", "--trials 4 --variants plain 'stain augmentation' --set data.synthetic.difficulty=0.5"),
                      _external_arguments, _external),
    "features": Bench("head trials (linear, mlp, logistic, knn) over one frozen backbone on the built-in set, with "
                      "its features cached once (model.feature_cache auto) and without (off): wall time, "
                      "trial-seconds, backbone passes, the best validation score",
                      ("", "--backbones resnet50@128 vit_small_patch14_dinov2@112 --trials 16 --epochs 5"),
                      _features_arguments, _features),
    "selection": Bench("how a search chooses its model (the best epoch as before, with epoch ties broken, the last "
                       "epoch) against one default-recipe trial's last epoch: test balanced accuracy and "
                       "trial-seconds on the harder built-in set with a small validation split and on real sets "
                       "(class folders, or CSV/Parquet manifests with path, label, group)",
                       ("--sets builtin --trials 4 --seeds 0", "--sets builtin /data/wbc /data/rbc.csv --seeds 0 1 2"),
                       _selection_arguments, _selection),
    "adapt": ADAPT,
    "adapt-cost": ADAPT_COST,
    "sites": SITES,
}


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option, examples kept as written."""


def _examples(name: str, examples: tuple[str, ...]) -> list[str]:
    return [f"  python -m leuktune.bench {name} {example}".rstrip() for example in examples]


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leuktune.bench", description=__doc__.partition("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples (each benchmark's --help has more):\n" + "\n".join(
            line for name, bench in BENCHES.items() for line in _examples(name, bench.examples[:1])))
    sub = parser.add_subparsers(dest="what", required=True, metavar="benchmark")
    for name, bench in BENCHES.items():
        bench.add_arguments(sub.add_parser(name, help=bench.summary, description=bench.summary, formatter_class=_Help,
                                           epilog="\n".join(["examples:", *_examples(name, bench.examples)])))
    args = parser.parse_args(argv)
    for key, value in (BENCHES[args.what].run(args) or {}).items():
        print(f"{key}: {value}")
    return 0
