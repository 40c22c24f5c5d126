"""The report's figures by site (lab): the test split's sites each alone (a table with 95% intervals
and a confusion matrix per site), and an external set's labs. Shown only when there are several
sites: with one, the whole split's figures are the site's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from leuktune.report import figures
from leuktune.report.cells import with_interval
from leuktune.report.collect import Inputs
from leuktune.report.render import Section

SHOWN = ("balanced_accuracy", "f1_macro", "accuracy")


def site_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``SITE_FIGURES`` as the report prints them: model, site, images, each shown metric
    with its 95% interval, the classes absent at the site."""
    table = pd.DataFrame({"model": rows["trial_id"], "site": rows["site"], "images": rows["images"]})
    for metric in SHOWN:
        table[f"{metric} (95% CI)"] = [with_interval(row, metric, prefix="") for _, row in rows.iterrows()]
    table["classes absent"] = [", ".join(absent) for absent in rows["classes_absent"]]
    return table.reset_index(drop=True)


def absent_notes(rows: pd.DataFrame, classes: list[str]) -> list[str]:
    """A sentence per site that lacks some classes: what its balanced accuracy is over."""
    notes = {}
    for row in rows.itertuples():
        absent = list(row.classes_absent)
        if absent and row.site not in notes:
            have = [c for c in classes if c not in absent]
            notes[row.site] = (f"Site {row.site} is scored on the classes it has: its balanced accuracy is over "
                               f"{', '.join(have)} ({', '.join(absent)} absent there).")
    return list(notes.values())


def sites_section(inp: Inputs, out: Path) -> Section | None:
    """Each test site alone for the evaluated models, the best trial's confusion matrix per site, and
    the worst site; None with fewer than two test sites."""
    by_site = inp.by_site
    # several sites for one model (merged single-site runs of two labs are not a split of several)
    if by_site.empty or by_site.groupby("trial_id")["site"].nunique().max() < 2:
        return None
    evaluated = inp.board[inp.board["test_balanced_accuracy"].notna()]
    order = {t: i for i, t in enumerate(evaluated["trial_id"])}  # best first, as the leaderboard ranks them
    rows = by_site[by_site["trial_id"].isin(order)].sort_values("trial_id", key=lambda c: c.map(order), kind="stable")
    classes = sorted(inp.split["label"].unique()) if len(inp.split) else \
        [str(i) for i in range(len(rows["confusion_matrix"].iloc[0]))]
    best = evaluated.iloc[0]
    worst = best.get("test_balanced_accuracy_worst")
    worst = f"{worst:.3f}" if worst is not None and pd.notna(worst) else "not computed"
    section = Section("The test split by site").add(
        f"Each lab of the test split scored alone, 95% intervals from resampling that site's groups. The best "
        f"trial {best['trial_id']}: worst site's balanced accuracy {worst} (the leaderboard's "
        "test_<metric>_worst: each metric at the model's worst test site).", site_table(rows), *absent_notes(rows, classes))
    for row in rows[rows["trial_id"] == best["trial_id"]].itertuples():
        matrix = np.array([list(r) for r in row.confusion_matrix])
        section.add(f"Site {row.site}, trial {best['trial_id']} ({row.images} images):",
                    figures.confusion(matrix, classes, out / f"confusion_site_{_safe(row.site)}.png"))
    return section


def external_sites(inp: Inputs, name: str) -> list:
    """An external set's labs each alone (a table), when the set names several; nothing otherwise."""
    if inp.external_by_site.empty:
        return []
    rows = inp.external_by_site[inp.external_by_site["set"] == name]
    if rows.groupby("trial_id")["site"].nunique().max() < 2:
        return []
    return [f"{name} by site:", site_table(rows)]


def _safe(site: str) -> str:
    """A site's name in a file name: letters, digits, - and _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", site)
