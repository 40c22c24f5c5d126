"""Rows into the run's typed tables. Rows are appended as trials finish, by writing the whole
table aside and renaming it over the old one (one request in a bucket), so a search killed at any
moment leaves a complete, readable file holding every trial that had finished.
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from leuktune.leaderboard.schemas import CONFUSION, RENAMED
from leuktune.runfolder import RunFolder


def _cast(value: Any, kind: pa.DataType) -> Any:
    if value is None or (isinstance(value, float) and value != value and not pa.types.is_floating(kind)):
        return None
    if pa.types.is_string(kind):
        return str(value)
    if kind == CONFUSION:
        return [[int(v) for v in row] for row in value]
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    return value


def table(rows: Iterable[dict[str, Any]], columns: pa.Schema) -> pa.Table:
    """Rows as a table of exactly these columns and types (missing values null)."""
    rows = list(rows)
    return pa.table({f.name: pa.array([_cast(r.get(f.name), f.type) for r in rows], type=f.type)
                     for f in columns}, schema=columns)


def conformed(old: pa.Table, columns: pa.Schema) -> pa.Table:
    """A table written by an earlier leuktune in today's columns: one this version added (e.g.
    ``val_ece``) is null in its rows, one it renamed (``RENAMED``) is read under its old name, so a
    run started before an upgrade resumes after it (a column this version no longer writes is left out)."""
    earlier = {new: old_name for old_name, new in RENAMED.items() if old_name in old.column_names}
    stored = {f.name: f.name if f.name in old.column_names else earlier.get(f.name) for f in columns}
    return pa.table({f.name: old[stored[f.name]].cast(f.type) if stored[f.name]
                     else pa.nulls(old.num_rows, f.type) for f in columns}, schema=columns)


def append(folder: RunFolder, name: str, rows: Iterable[dict[str, Any]], columns: pa.Schema,
           replacing: Iterable[str] = ()) -> None:
    """Add rows to one of the run's tables, atomically; the table's rows of the trials in
    ``replacing`` (trial ids) go first."""
    new = table(rows, columns)
    replacing = pa.array(list(replacing), pa.string())
    if new.num_rows == 0 and len(replacing) == 0:
        return
    if folder.exists(name):
        old = conformed(folder.read_table(name), columns)
        if len(replacing):
            old = old.filter(pc.invert(pc.is_in(old["trial_id"], value_set=replacing)))
        new = pa.concat_tables([old, new])
    folder.write_table(name, new)
