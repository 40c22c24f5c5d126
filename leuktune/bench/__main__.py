"""Benchmarks whose figures go into issue notes; timings live here, never in tests.

    python -m leuktune.bench models                 # every named backbone: params, features, groups, img/s
    python -m leuktune.bench models --backbones resnet50 vgg16 --image-size 224 --batch 8
    python -m leuktune.bench cache                  # decode-once cache vs decoding files each epoch
    python -m leuktune.bench trial-overhead         # seconds per trial outside its epochs, vs plain Tune trials
    python -m leuktune.bench trial-overhead --launcher train --trials 4
    python -m leuktune.bench gpu-occupancy          # on a GPU machine: GPU busy fraction over a real search
    python -m leuktune.bench searchers              # TPE + ASHA vs random without early stopping, 3 seeds
    python -m leuktune.bench throughput             # bare PyTorch loop vs leuktune's trainer (CPU: tiny, 64px)
    python -m leuktune.bench throughput --backbone resnet50 --image-size 224 --batch 64   # on a GPU
    python -m leuktune.bench throughput --backbone resnet50 --image-size 224 --batch 128 --compile
"""

from __future__ import annotations

import argparse
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    models = sub.add_parser("models", help="forward+backward speed and shape of each backbone")
    models.add_argument("--backbones", nargs="+", default=None)
    models.add_argument("--image-size", type=int, default=224)
    models.add_argument("--batch", type=int, default=8)
    models.add_argument("--steps", type=int, default=3)
    caching = sub.add_parser("cache", help="epoch read from the decode-once cache vs decoding files")
    caching.add_argument("--workdir", default="runs/bench-cache")
    caching.add_argument("--images", type=int, default=2000)
    caching.add_argument("--source-size", type=int, default=256)
    caching.add_argument("--image-size", type=int, default=224)
    caching.add_argument("--batch", type=int, default=64)
    speed = sub.add_parser("throughput", help="bare PyTorch loop vs leuktune's trainer, same model and batch")
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
    overhead = sub.add_parser("trial-overhead", help="per-trial start/stop cost through the real search path")
    overhead.add_argument("--trials", type=int, default=8)
    overhead.add_argument("--concurrent", type=int, default=2)
    overhead.add_argument("--epochs", type=int, default=2)
    overhead.add_argument("--launcher", default="auto", choices=["auto", "tune", "train"])
    overhead.add_argument("--workdir", default="runs/bench-overhead")
    overhead.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                          help="override the built-in experiment (repeatable)")
    occupancy = sub.add_parser("gpu-occupancy", help="how busy the GPU is over a real search (any GPU machine)")
    occupancy.add_argument("--images", type=int, default=3000)
    occupancy.add_argument("--image-size", type=int, default=128)
    occupancy.add_argument("--backbone", default="resnet50")
    occupancy.add_argument("--trials", type=int, default=8)
    occupancy.add_argument("--epochs", type=int, default=10)
    occupancy.add_argument("--trials-per-gpu", type=int, default=4)
    occupancy.add_argument("--workdir", default="runs/bench-occupancy")
    occupancy.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                           help="override the search (repeatable), e.g. --set resources.launcher=train")
    searchers = sub.add_parser("searchers", help="TPE with ASHA vs random search without early stopping")
    searchers.add_argument("--trials", type=int, default=8)
    searchers.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    searchers.add_argument("--workdir", default="runs/bench-searchers")
    searchers.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                           help="override the built-in experiment (repeatable)")
    args = parser.parse_args(argv)
    if args.what == "searchers":
        from leuktune.bench.searchers import bench_searchers

        bench_searchers(args.trials, args.seeds, args.workdir, args.overrides)
        return 0
    if args.what == "gpu-occupancy":
        from leuktune.bench.occupancy import bench_gpu_occupancy

        for key, value in bench_gpu_occupancy(args.images, args.image_size, args.backbone, args.trials, args.epochs,
                                              args.trials_per_gpu, args.workdir, args.overrides).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "trial-overhead":
        from leuktune.bench.overhead import bench_trial_overhead

        bench_trial_overhead(args.trials, args.concurrent, args.epochs, args.launcher, args.workdir, args.overrides)
        return 0
    if args.what == "throughput":
        from leuktune.bench.throughput import bench_throughput

        for key, value in bench_throughput(args.backbone, args.image_size, args.batch, args.images, args.epochs,
                                           args.device, args.threads, args.compile, args.launcher).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "cache":
        from leuktune.bench.cache import bench_cache

        for key, value in bench_cache(args.workdir, args.images, args.source_size, args.image_size,
                                      args.batch).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "models":
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


if __name__ == "__main__":
    sys.exit(main())
