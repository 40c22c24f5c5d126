"""The benchmark of choosing models on labs they never saw (``python -m leuktune.bench sites``): its
options and what it runs."""

from __future__ import annotations

import argparse

from leuktune.cli.bench_options import Bench, searches

MODE_NAMES = ("home", "pooled", "sites")


def _lab(text: str) -> tuple[str, str]:
    name, sep, root = text.partition("=")
    if not sep or not name or not root:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=ROOT (a lab's name and its class folder or manifest)")
    return name, root


def _sites_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labs", nargs="+", type=_lab, default=[], metavar="NAME=ROOT",
                        help="the labs, each a class folder or manifest (default: the built-in set's four labs)")
    parser.add_argument("--home", help="the lab the home mode trains on (default: the first lab)")
    parser.add_argument("--held-out", nargs="+", default=[], metavar="NAME",
                        help="the labs held out in turn (default: every lab)")
    parser.add_argument("--modes", nargs="+", default=list(MODE_NAMES), choices=MODE_NAMES,
                        help="home: one lab; pooled: other labs, in-distribution validation; sites: search.cv sites")
    parser.add_argument("--levers", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="the cross-site levers (scale, colour strength, blur, grayscale) fixed off or searched")
    parser.add_argument("--classes", nargs="+", default=[],
                        help="the classes every lab shares (data.classes; the labs' other classes are left out)")
    searches(parser, 4, "runs/bench-sites", seeds=False)


def _sites(args: argparse.Namespace) -> None:
    from leuktune.bench.sites import bench_sites  # each benchmark's modules only when it runs

    bench_sites(dict(args.labs), args.home, args.held_out, args.modes, args.levers, args.classes, args.trials,
                args.workdir, args.overrides)


SITES = Bench("leave-one-lab-out: each lab held out of the whole search in turn, the same trial budget spent on one "
              "lab (home), on the others pooled with in-distribution validation (pooled), and on the others with "
              "search.cv: sites; the levers off and searched; the pick's balanced accuracy on the held-out lab, mean "
              "and worst, with trial-seconds",
              ("--trials 2 --held-out far --modes pooled sites --levers off --set train.epochs=2",
               "--labs lisc=/data/lisc giib=/data/giib bccd=/data/bccd bionet=/data/bionet --home lisc "
               "--classes eosinophil lymphocyte monocyte neutrophil --trials 6"),
              _sites_arguments, _sites)
