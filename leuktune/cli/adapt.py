"""``python -m leuktune.adapt``: argument parsing and printing over ``leuktune.Run.adapt``."""

from __future__ import annotations

import argparse

from leuktune.errors import command

DESCRIPTION = """\
Adapt a run's best trial and its ensemble to a new lab with a few of the lab's labelled cells, and
measure them on the lab's other cells. PER_CLASS cells of each class are drawn (whole patients,
seeded); the rest are the lab's test, never used to fit or choose anything. The steps (BatchNorm
statistics, colours, fine-tuning, the temperature) are chosen by cross-validation on the labelled
cells alone. Each adapted model is written once into the run (adapted/<name>/<per_class>/) and served
by predict and export (--adapted NAME); the run's own models are never changed. Prints the curve:
balanced accuracy (95% CI) on the lab's held-out cells against labelled cells a class."""

EXAMPLES = """\
examples:
  # the built-in search's run (python -m leuktune.search), adapted to the built-in second site (another
  # lab's stain and magnification: written first) with 5 and 10 labelled cells a class
  python -c "from leuktune.data import synthetic; synthetic.generate('site1', site=1, seed=1000)"
  python -m leuktune.adapt runs/synthetic-default --labelled site1 --per-class 5 10

  # a lab whose folders are named otherwise, with more of its images unlabelled
  python -m leuktune.adapt runs/wbc --labelled /data/lab-c --classes 'Lymphocytes=lymphocyte,Monocytes=monocyte' \\
      --per-class 5 10 20 --unlabelled /data/lab-c-unlabelled --name lab-c

  # then: its predictions, and its ONNX export
  python -m leuktune.predict --run runs/wbc --adapted lab-c /data/lab-c-new --out p.csv
  python -m leuktune.export --run runs/wbc --adapted lab-c --per-class 20
"""


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.adapt", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run folder (<storage.path>/<name>), local or a URI")
    parser.add_argument("--labelled", required=True, metavar="ROOT",
                        help="the lab's labelled cells: a class folder, bucket prefix or CSV manifest")
    parser.add_argument("--source", default="imagefolder", choices=["imagefolder", "cnmc", "allidb", "csv"],
                        help="how ROOT is laid out")
    parser.add_argument("--classes", metavar="THEIRS=OURS,...", help="the lab's class names mapped to the run's "
                        "(default: matched by name)")
    parser.add_argument("--per-class", type=int, nargs="+", default=[10], metavar="N",
                        help="labelled cells a class to adapt with, one model each (default: 10)")
    parser.add_argument("--unlabelled", metavar="FOLDER", help="more of the lab's images, for the steps that read no "
                        "label (any of the lab's held-out cells among them is left out)")
    parser.add_argument("--name", help="the lab's name in the run (default: ROOT's last part)")
    parser.add_argument("--trial", help="adapt this trial (and the ensemble; 'ensemble': it alone); default: the best")
    parser.add_argument("--steps", nargs="+", metavar="STEP", help="steps to choose from: bn, colour, head, last, "
                        "whole, temperature (default: leuktune.adapting.DEFAULT_STEPS)")
    parser.add_argument("--as-asked", action="store_true", help="apply every step of --steps (at most one of head, "
                        "last, whole) instead of choosing among them by cross-validation: a fraction of the cost")
    parser.add_argument("--seed", type=int, default=0, help="which cells are drawn, and the tuning's draws")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    args = parser.parse_args(argv)
    # imported after the arguments are parsed: --help answers at once, without torch or Ray
    from leuktune.adapting.curve import table
    from leuktune.evaluation.external import ExternalSet, parse_classes
    from leuktune.run import Run

    labelled = ExternalSet(args.labelled, args.source, parse_classes(args.classes), name=args.name)
    curve = Run.open(args.run).adapt(labelled, per_class=args.per_class, unlabelled=args.unlabelled,
                                     trial=args.trial, name=args.name, seed=args.seed, steps=args.steps,
                                     choose=not args.as_asked, device=args.device)
    print(table(curve))
    return 0
