"""Figures as the report's tables print them."""

from __future__ import annotations

import pandas as pd


def with_interval(row: pd.Series, metric: str) -> str:
    value = row.get(f"test_{metric}")
    if value is None or pd.isna(value):
        return ""
    return f"{value:.3f} ({row[f'test_{metric}_low']:.3f}-{row[f'test_{metric}_high']:.3f})"
