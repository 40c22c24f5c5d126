"""``python -m leuktune.predict``: classify new cell images with a trained model.

Each image is resized and normalised as the model was trained; the probabilities are
calibrated with the temperature the final evaluation fitted. A file that cannot be read is
reported in its row and the others are classified.
"""

from __future__ import annotations

import argparse
import sys

from leuktune.errors import command

EXAMPLES = """\
examples:
  # the best trial of a run, every image under a folder, to a CSV file
  python -m leuktune.predict --run runs/cnmc-binary /data/new-smears --out predictions.csv

  # one trial, a few files, to Parquet (averaging over flips too)
  python -m leuktune.predict --run runs/cnmc-binary --trial 3f2a9c1e a.bmp b.bmp --out p.parquet --tta

  # the best trial adapted to another lab (python -m leuktune.adapt), with 10 labelled cells a class
  python -m leuktune.predict --run runs/cnmc-binary --adapted lab-b --per-class 10 /data/lab-b-new
"""


def image_files(inputs: list[str]) -> list[str]:
    """Files as given, and the image files under each folder given (local or a bucket prefix), as
    a dataset's are found."""
    # imported after the arguments are parsed: --help answers at once, without torch or Ray
    from leuktune.data.files import is_folder
    from leuktune.data.sources import images_under

    files = []
    for item in inputs:
        files += images_under(item) if is_folder(item) else [item]
    return files


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.predict", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDER")
    parser.add_argument("--run", required=True, help="the run folder (<storage.path>/<name>), local or a URI")
    parser.add_argument("--adapted", metavar="NAME", help="the model adapted to this lab (python -m leuktune.adapt)")
    parser.add_argument("--per-class", type=int, metavar="N", help="with --adapted: the one adapted with N labelled "
                        "cells a class (default: the most)")
    parser.add_argument("--trial", help="the trial id, or ensemble (the weighted ensemble of the best trials); "
                        "default: the run's best trial")
    parser.add_argument("--out", help="a .csv or .parquet file (default: CSV on standard output)")
    parser.add_argument("--tta", action="store_true", help="average over each image and its flips")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    args = parser.parse_args(argv)

    # imported after the arguments are parsed: --help answers at once, without torch or Ray
    from leuktune.data.sources import DataError
    from leuktune.run import Run

    files = image_files(args.images)
    if not files:
        raise DataError(f"no image files in {', '.join(args.images)}")
    model = Run.open(args.run).model(trial=args.trial, device=args.device, adapted=args.adapted,
                                     per_class=args.per_class)
    table = model.predict(files, tta=args.tta)
    if args.out is None:
        table.to_csv(sys.stdout, index=False)
    elif args.out.endswith(".parquet"):
        table.to_parquet(args.out, index=False)
    else:
        table.to_csv(args.out, index=False)
    bad = table["error"].notna().sum()
    print(f"[leuktune] {len(table) - bad} image(s) classified by {model}" + (f"; {bad} could not be read"
          if bad else "") + (f"; written to {args.out}" if args.out else ""), file=sys.stderr)
    return 0
