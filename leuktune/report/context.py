"""The report's sections on what the search used and on the data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leuktune.data.split import SPLITS
from leuktune.report import figures
from leuktune.report.collect import Inputs
from leuktune.report.render import Section


def cost_section(inp: Inputs) -> Section:
    """What the search used: GPU- and CPU-hours (each trial's time x the share of the node it
    held), trials, and the nodes they ran on (a trial restarted on another node counts both)."""
    board = inp.trials
    section = Section("What the search used")
    if "gpu_seconds" not in board or board["cpu_seconds"].isna().all():
        return section.add("This leaderboard has no cost columns (a search of an earlier leuktune).")
    where = inp.history if "node_id" in inp.history and inp.history["node_id"].notna().any() else board
    nodes = where.dropna(subset=["node_id"]).drop_duplicates(["trial_id", "node_id"])
    started, finished = pd.to_datetime(board["started_at"]).min(), pd.to_datetime(board["finished_at"]).max()
    span = f" over {(finished - started).total_seconds() / 3600:.2f} hours of wall time" if pd.notna(started) else ""
    section.add(f"{len(board)} trials on {nodes['node_id'].nunique()} node(s){span}: "
                f"{board['gpu_seconds'].sum() / 3600:.2f} GPU-hours and {board['cpu_seconds'].sum() / 3600:.2f} "
                "CPU-hours held by trials.")
    per_node = board.assign(gpu_hours=board["gpu_seconds"] / 3600, cpu_hours=board["cpu_seconds"] / 3600)
    per_node = (per_node.groupby(["node_ip", "node_id"], dropna=False)
                .agg(trials=("trial_id", "size"), gpu_hours=("gpu_hours", "sum"), cpu_hours=("cpu_hours", "sum"))
                .reset_index())
    per_node["node_id"] = per_node["node_id"].str[:12]
    return section.add("By the node each trial ended on:", per_node.round(3))


def data_section(inp: Inputs, out: Path) -> Section:
    section = Section("The data")
    if inp.split.empty:
        return section.add("No split.parquet in the run folder.")
    counts = inp.split.groupby(["label", "split"]).size().unstack(fill_value=0)
    counts = counts[[s for s in SPLITS if s in counts]]
    section.add(f"{len(inp.split)} images, {counts.shape[0]} classes, {inp.split['group'].nunique()} groups "
                "(patients, or single images where the data names none); no group is in two splits.",
                counts.reset_index(), figures.class_counts(counts, out / "class_counts.png"))
    section.add(f"{len(inp.rejected)} file(s) rejected as unreadable." if len(inp.rejected) else
                "No file was rejected.")
    if len(inp.rejected):
        section.add(inp.rejected.head(20))
    section.add(f"{len(inp.near_duplicates)} near-duplicate pair(s) across splits." if len(inp.near_duplicates)
                else "No near-duplicate images across splits.")
    if len(inp.near_duplicates):
        section.add(inp.near_duplicates.head(10))
    return section
