"""A report a researcher decides from and can put in a paper: the sections, in reading order."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from leuktune import runfolder
from leuktune.adapting.store import curves
from leuktune.report.adapted import adapted_section
from leuktune.report.cells import with_interval
from leuktune.report.collect import Inputs, collect
from leuktune.report.context import cost_section, data_section
from leuktune.report.evaluated import ensemble_section, external_section, refit_section, test_section
from leuktune.report.render import Section, markdown, page
from leuktune.report.searched import search_section
from leuktune.report.sites import sites_section

TOP = 10


def top_table(inp: Inputs) -> pd.DataFrame:
    board = inp.board.head(TOP)
    table = pd.DataFrame({"trial": board["trial_id"], "status": board["status"]})
    if board["experiment"].nunique() > 1:
        table.insert(0, "experiment", board["experiment"])
    for key in inp.searched:
        table[key] = [("" if v != v else f"{v:.3g}") if isinstance(v, float) else v for v in board[key]]
    table[inp.metric] = board[inp.metric].round(4)
    if f"{inp.metric}_se" in board:
        table["± SE"] = board[f"{inp.metric}_se"].round(4)
        table["tied with top"] = ["yes" if tied is True else "" for tied in board["tied_with_top"]]
    if "top_difference_low" in board and board["top_difference_low"].notna().any():
        table["minus top (95%)"] = [f"{low:+.3f} to {high:+.3f}" if pd.notna(low) else ""
                                    for low, high in zip(board["top_difference_low"], board["top_difference_high"])]
    for metric in ("balanced_accuracy", "f1_weighted", "accuracy"):
        table[f"test {metric} (95% CI)"] = [with_interval(row, metric) for _, row in board.iterrows()]
    if "test_ece" in board:
        table["test ECE -> calibrated"] = [f"{a:.3f} -> {b:.3f}" if pd.notna(a) else ""
                                           for a, b in zip(board["test_ece"], board["test_ece_calibrated"])]
    table["params (M)"] = (board["params"] / 1e6).round(2)
    table["time (s)"] = board["train_seconds"].round(1)
    return table


def write_report(runs: list, out: str | Path | None = None, echo: Callable[[str], None] = print) -> Path:
    """Markdown and self-contained HTML (with the PNGs) for one run or several merged; a search
    still running is reported as far as it has come. Returns the HTML file."""
    inp = collect(runs)
    out = Path(out) if out else (Path(inp.folders[0].path) / runfolder.REPORT if inp.folders[0].local else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    names = ", ".join(sorted(inp.board["experiment"].dropna().unique()))
    statuses = ", ".join(f"{n} {s}" for s, n in inp.trials["status"].value_counts().items())
    overview = Section("Overview").add(
        f"Experiment(s) {names}: {len(inp.trials)} trials ({statuses}), ranked by {inp.metric} "
        f"({inp.config.search.mode}). The test split is read only by the final evaluation.", top_table(inp))
    sections = [overview, search_section(inp, out), test_section(inp, out, echo),
                *filter(None, [sites_section(inp, out), ensemble_section(inp, out), external_section(inp),
                               adapted_section(curves(inp.folders[0]), out), refit_section(inp)]),
                cost_section(inp), data_section(inp, out)]
    title = f"leuktune report: {names}"
    (out / "report.md").write_text(markdown(title, sections, out))
    (out / "report.html").write_text(page(title, sections))
    return out / "report.html"
