"""``python -m leuktune.data`` with bad files skipped: the command's output lists them (a check
writes no run), and ``--out DIR`` writes its tables where it is told."""

from __future__ import annotations

import pandas as pd

from leuktune.cli.data import main
from test_data_layouts import write_folder


def _args(tmp_path, root, *more: str) -> list[str]:
    overrides = [f"storage.path={tmp_path / 'runs'}", "name=check", "data.source=imagefolder", f"data.root={root}",
                 "data.image_size=24", "data.on_bad_image=skip"]
    return [*(a for o in overrides for a in ("--set", o)), *more]


def test_the_data_check_lists_its_bad_files_and_writes_its_tables_only_where_told(tmp_path, capsys, ray_runtime):
    root = write_folder(tmp_path / "cells", n=6)
    bad = [root / ("ALL" if i % 2 else "healthy") / f"broken_{i:02d}.png" for i in range(22)]
    for path in bad:
        path.write_bytes(b"")
    assert main(_args(tmp_path, root)) == 0
    out = capsys.readouterr().out
    assert "22 bad file(s) left out" in out
    listed = [path for path in sorted(map(str, bad)) if path in out]
    assert len(listed) == 20 and "and 2 more" in out  # the first 20 by name, then a count
    assert "rejected.parquet" not in out and not list(tmp_path.rglob("rejected.parquet"))  # no such file: not named

    tables = tmp_path / "tables"
    assert main(_args(tmp_path, root, "--out", str(tables))) == 0
    out = capsys.readouterr().out
    assert f"(listed in rejected.parquet in {tables})" in out
    rejected = pd.read_parquet(tables / "rejected.parquet")
    assert sorted(rejected["path"]) == sorted(map(str, bad)) and rejected["error"].str.len().gt(0).all()
    split = pd.read_parquet(tables / "split.parquet")
    assert len(split) == 12 and {"path", "label", "group", "split"} <= set(split.columns)
    assert not (tmp_path / "runs" / "check").exists()  # the run folder stays as it was: nothing
