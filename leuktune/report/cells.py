"""Figures as the report's tables print them."""

from __future__ import annotations

import pandas as pd


def with_interval(row: pd.Series, metric: str, prefix: str = "test_") -> str:
    """``test_<metric>`` of a leaderboard row (or ``<prefix><metric>``: '' for a row by site) and its 95% interval."""
    value = row.get(f"{prefix}{metric}")
    if value is None or pd.isna(value):
        return ""
    return f"{value:.3f} ({row[f'{prefix}{metric}_low']:.3f}-{row[f'{prefix}{metric}_high']:.3f})"
