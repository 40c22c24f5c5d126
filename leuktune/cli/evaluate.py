"""``python -m leuktune.evaluate``: argument parsing and printing over ``leuktune.Run.evaluate``."""

from __future__ import annotations

import argparse

from leuktune.errors import command

EXAMPLES = """\
examples:
  # the best 3 trials (evaluate.top_k of the run) on the test split, once
  python -m leuktune.evaluate runs/synthetic-default

  # the best 2, and each retrained on 5 group-disjoint folds (small sets such as ALL-IDB2)
  python -m leuktune.evaluate runs/allidb2 --top 2 --refit-folds 5

  # one trial, a run folder in a bucket
  python -m leuktune.evaluate s3://my-bucket/leuktune/cnmc-binary --trial 3f2a9c1e

  # the evaluated trials and the ensemble on another lab's cells (their class names mapped to the run's)
  python -m leuktune.evaluate runs/cnmc-binary --external /data/other-lab --classes 'blast=all,normal=hem'
"""


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.evaluate", epilog=EXAMPLES,
                                     description="Score a search's best trials on the test split (95% bootstrap "
                                     "intervals, calibration) and optionally retrain them on folds.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run folder (<storage.path>/<name>), local or a URI")
    parser.add_argument("--top", type=int, help="how many of the best trials (default: evaluate.top_k of the run)")
    parser.add_argument("--trial", help="evaluate this trial id instead")
    parser.add_argument("--refit-folds", type=int, metavar="K",
                        help="also retrain each chosen trial on K group-disjoint folds, each image held out once "
                        "(refit_folds.parquet; not search.cv, whose folds choose the trials)")
    parser.add_argument("--cv", type=int, metavar="K", help=argparse.SUPPRESS)  # --refit-folds's earlier name
    parser.add_argument("--external", action="append", metavar="ROOT",
                        help="score another dataset (a folder, bucket prefix or CSV; repeatable) with the evaluated "
                        "trials and the ensemble, instead of the test split")
    parser.add_argument("--external-source", default="imagefolder", choices=["imagefolder", "cnmc", "allidb", "csv"],
                        help="how the external sets are laid out")
    parser.add_argument("--classes", metavar="THEIRS=OURS,...",
                        help="the external sets' class names mapped to the run's (default: matched by name)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    args = parser.parse_args(argv)
    refit_folds = args.refit_folds
    if args.cv is not None:
        print(f"[leuktune] WARNING: --cv {args.cv} is now --refit-folds {args.cv} (retraining the chosen trials on "
              "folds; search.cv is the folds that choose them); read as --refit-folds", flush=True)
        refit_folds = args.cv if refit_folds is None else refit_folds
    # imported after the arguments are parsed: --help answers at once, without torch or Ray
    from leuktune.run import Run

    run = Run.open(args.run)
    if args.external:
        # the external path's modules only when it is taken
        from leuktune.evaluation.external import ExternalSet, parse_classes

        classes = parse_classes(args.classes)
        sets = [ExternalSet(root, args.external_source, classes) for root in args.external]
        run.evaluate(top=args.top, external=sets, device=args.device)
        table = run.external()
        print(table[table["set"].isin([s.label for s in sets])].to_string(index=False,
                                                                          float_format=lambda v: f"{v:.4g}"))
        return 0
    board = run.evaluate(top=args.top, refit_folds=refit_folds, trial=args.trial, device=args.device)
    shown = [c for c in ("trial_id", "status", "val_balanced_accuracy", "test_balanced_accuracy",
                         "test_balanced_accuracy_low", "test_balanced_accuracy_high", "test_ece",
                         "test_ece_calibrated", "refit_folds", "refit_balanced_accuracy_mean",
                         "refit_balanced_accuracy_std") if c in board and board[c].notna().any()]
    print(board[shown].head(10).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0
