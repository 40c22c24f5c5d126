"""The report's section on the run's models adapted to other labs (``Run.adapt``): the curve of each
lab, how a model does on the lab's held-out cells against how many of its labelled cells a class
adapted it, beside its home test figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leuktune.report import figures
from leuktune.report.render import Section


def adapted_section(curves: pd.DataFrame, out: Path) -> Section | None:
    if curves.empty:
        return None
    section = Section("Adapted to other labs").add(
        "The best trial and the ensemble adapted to each lab with a few of its labelled cells a class (0: as the "
        "search left them), scored on the lab's cells that no step saw; the steps were chosen by cross-validation "
        "on the labelled cells alone. 95% intervals from resampling the lab's groups.")
    for lab, rows in curves.groupby("set", sort=False):
        table = rows.assign(**{"balanced accuracy (95% CI)": [
            f"{v:.3f} ({lo:.3f}-{hi:.3f})" for v, lo, hi in
            zip(rows["balanced_accuracy"], rows["balanced_accuracy_low"], rows["balanced_accuracy_high"])]})
        shown = ["per_class", "model", "steps", "balanced accuracy (95% CI)", "f1_macro", "labelled", "test"]
        section.add(f"{lab}: {int(rows['test'].iloc[0])} held-out cells.",
                    figures.adaptation_curve(rows, str(lab), out / f"adapted_{lab}.png"),
                    table[shown].round(3))
    return section
