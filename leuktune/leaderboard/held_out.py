"""Each held-out site's figures of a trial that validates on labs it never saw (``search.cv:
sites``): rows of their own in the history (its ``site`` column names the lab; a trial's own rows
leave it null) and in ``sites.parquet`` (a row per trial and held-out site, at the kept epoch).

The trial reports them with each epoch (``EpochReport.val_sites``); the search keeps them as rows
so that a table reader (pandas, DuckDB) filters by site instead of parsing, and reads them back
into the reports when a search resumes.

>>> from leuktune.results import EpochReport
>>> report = EpochReport(epoch=1, val={"loss": 0.5}, newly_kept_epoch=1,
...                      val_sites={"home": {"val": {"loss": 0.4}, "val_se": {"loss": 0.1}, "val_images": 9},
...                                 "lab-b": {"val": {"loss": 0.6}, "val_se": {}, "val_images": 7}})
>>> rows = history_rows({"trial_id": "t"}, report)
>>> [(r["site"], r["val_loss"]) for r in rows]
[(None, 0.5), ('home', 0.4), ('lab-b', 0.6)]
>>> {site: figures["val"] for site, figures in reports(rows)[0].val_sites.items()}
{'home': {'loss': 0.4}, 'lab-b': {'loss': 0.6}}
>>> [(r["site"], r["val_images"]) for r in kept_rows("e", "t", [report])]
[('home', 9), ('lab-b', 7)]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import pandas as pd

from leuktune.data.sites import SITE
from leuktune.metrics import METRICS
from leuktune.results import EpochReport


def _figures(site: dict[str, Any]) -> dict[str, Any]:
    return {**{f"val_{m}": v for m, v in site.get("val", {}).items()},
            **{f"val_{m}_se": v for m, v in site.get("val_se", {}).items()}}


def history_rows(base: dict[str, Any], report: EpochReport) -> list[dict[str, Any]]:
    """An epoch's history rows: the trial's (``base`` and the report, no site), then one per held-out site."""
    own = {**base, **report.to_result(), SITE: None}
    at = {"epoch": report.epoch, "validation": report.validation}
    return [own, *({**base, **at, SITE: name, **_figures(site)} for name, site in report.val_sites.items())]


def reports(rows: Iterable[dict[str, Any]]) -> list[EpochReport]:
    """The reports of a trial's history rows (a stored part read back): each site row joins its epoch's report."""
    rows = list(rows)
    sites: dict[int, dict[str, dict]] = {}
    for row in rows:
        if isinstance(row.get(SITE), str):
            sites.setdefault(int(row["epoch"]), {})[row[SITE]] = {
                "val": {m: row[f"val_{m}"] for m in METRICS if pd.notna(row.get(f"val_{m}"))},
                "val_se": {m: row[f"val_{m}_se"] for m in METRICS if pd.notna(row.get(f"val_{m}_se"))},
                "val_images": None}  # not a history column: split.parquet counts a site's images
    out = []
    for row in rows:
        if not isinstance(row.get(SITE), str):
            report = EpochReport.from_result(row)
            out.append(dataclasses.replace(report, val_sites=sites[report.epoch]) if report.epoch in sites else report)
    return out


def kept_rows(experiment: str, trial_id: str, results: list[EpochReport]) -> list[dict[str, Any]]:
    """``sites.parquet``'s rows of a trial: each held-out site's figures at its kept epoch (none
    without one, or for a trial that held out no sites)."""
    kept = next((r for r in reversed(results) if r.newly_kept_epoch), None)
    if kept is None:
        return []
    return [{"experiment": experiment, "trial_id": trial_id, SITE: name, "kept_epoch": kept.epoch,
             "val_images": site.get("val_images"), **_figures(site)} for name, site in kept.val_sites.items()]


def trial_epochs(history: pd.DataFrame) -> pd.DataFrame:
    """The history's rows of trials' own epochs (a held-out site's rows left out): a row per trial-epoch."""
    return history[history[SITE].isna()] if SITE in history else history
