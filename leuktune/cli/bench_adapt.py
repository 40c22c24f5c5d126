"""The benchmarks of adapting a run's model to a new lab (``python -m leuktune.bench adapt`` and
``adapt-cost``): their options and what each runs."""

from __future__ import annotations

import argparse

from leuktune.cli.bench_options import Bench, overrides

VARIANT_NAMES = ("bn alone", "colour alone", "head alone", "last alone", "whole alone", "temperature alone",
                 "chosen (default steps)", "chosen (every step)", "plain fine-tune")


def _adapt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="the home run (default: a search of the built-in set, its second site the lab)")
    parser.add_argument("--labs", nargs="+", default=[], metavar="ROOT", help="other labs' class folders")
    parser.add_argument("--classes", metavar="THEIRS=OURS,...", help="the labs' class names mapped to the run's")
    parser.add_argument("--per-class", type=int, nargs="+", default=[0, 5, 10, 20, 50], help="labelled cells a class")
    parser.add_argument("--variants", nargs="+", default=list(VARIANT_NAMES), choices=VARIANT_NAMES,
                        help="each step alone, the steps chosen by cross-validation, the plain fine-tune")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="draws of the labelled cells")
    parser.add_argument("--models", nargs="+", default=["best"], choices=["best", "ensemble"],
                        help="the run's best trial, its ensemble")
    parser.add_argument("--trials", type=int, default=4, help="trials of the built-in search (without --run)")
    parser.add_argument("--workdir", default="runs/bench-adapt", help="where the built-in search and the table go")
    overrides(parser, "override the built-in search (repeatable)")


def _adapt(args: argparse.Namespace) -> None:
    # each benchmark's modules only when it runs (this one imports Ray and torch)
    from leuktune.bench.adapt import bench_adapt
    from leuktune.evaluation.external import parse_classes

    bench_adapt(args.run, args.labs, parse_classes(args.classes), args.per_class, args.variants, args.seeds,
                args.models, args.trials, args.workdir, args.overrides)


def _cost_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="resnet50", help="timm backbone, random weights")
    parser.add_argument("--image-size", type=int, default=128, help="pixels per side")
    parser.add_argument("--per-class", type=int, default=20, help="labelled cells a class")
    parser.add_argument("--classes", type=int, default=4, help="classes")
    parser.add_argument("--workdir", default="runs/bench-adapt-cost", help="where the lab's images are written")


def _cost(args: argparse.Namespace) -> None:
    from leuktune.bench.adapt_cost import bench_adapt_cost  # each benchmark's modules only when it runs

    bench_adapt_cost(args.backbone, args.image_size, args.per_class, args.classes, args.workdir)


ADAPT = Bench("a home run's best trial (and ensemble) adapted to other labs with 0, 5, 10, 20, 50 labelled cells a "
              "class: each step alone, the steps chosen by cross-validation, and issue #38's plain fine-tune, over "
              "seeds; balanced accuracy on half of each lab's remaining cells (the other half given unlabelled)",
              ("--trials 2 --per-class 0 5 --seeds 0 --variants 'head alone' 'chosen (default steps)'",
               "--run runs/wbc --labs /data/sites/lisc /data/sites/giib --per-class 0 5 10 20"),
              _adapt_arguments, _adapt)
ADAPT_COST = Bench("seconds to adapt one trial of a backbone (random weights) with the default steps (chosen, and "
                   "as asked) and each tuning step alone, on this machine's CPU threads",
                   ("", "--backbone resnet50 --image-size 64 --per-class 20"), _cost_arguments, _cost)
