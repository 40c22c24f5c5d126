"""``leuktune.check_data``: a dataset examined as a search would see it, without training."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence


def check_data(config: str | Path | None = None, overrides: Sequence[str] = (), *,
               out: str | Path | None = None, echo: Callable[[str], None] = print):
    """Counts per class and split, groups (patients), bad files, exact and near duplicates, as a
    ``DataReport`` (``print(report)`` shows what ``python -m leuktune.data`` prints).

    Raises ``ConfigError`` for a bad configuration and ``DataError`` for a problem that would
    stop a search (e.g. unreadable files). Images are decoded by Ray tasks (the Ray this process
    is connected to, else a local one) and cached, so the search that follows decodes nothing;
    nothing is written into the run folder. ``out`` (a folder, local or a URI) gets the check's
    tables as a search would write them: ``split.parquet`` (the usable files: path, label, group,
    site, split), ``rejected.parquet`` (path, label, site, error), ``near_duplicates.parquet`` and,
    with several sites, ``spanning_groups.parquet`` (group, sites, images).

    >>> report = leuktune.check_data(overrides=["data.source=imagefolder", "data.root=/data/cells"])  # doctest: +SKIP
    >>> report.counts  # doctest: +SKIP
    """
    # leuktune.data is imported with each of its modules: the data layer's Ray only when data is checked
    from leuktune import runfolder
    from leuktune.config import load
    from leuktune.data.prepare import prepare
    from leuktune.runfolder import RunFolder

    _, report = prepare(RunFolder.resolved(load(config, overrides)), progress=echo, record=False)  # a check writes no run
    if out is not None:
        tables = RunFolder.at(str(out))
        for name, table in ((runfolder.SPLIT, report.split), (runfolder.REJECTED, report.rejected),
                            (runfolder.NEAR_DUPLICATES, report.near_duplicates)):
            tables.write_table(name, table)
        if report.spanning_groups is not None and len(report.spanning_groups):
            tables.write_table(runfolder.SPANNING_GROUPS, report.spanning_groups)
        report.stored_in = str(out)
    return report
