"""A run written before each stage had its own table, given them once; a table an earlier release
stored under another name, given today's."""

from __future__ import annotations

import dataclasses

from leuktune import runfolder
from leuktune.leaderboard.derived import earlier_release, ensemble, read_renamed, searched_part, tested_part, write
from leuktune.leaderboard.schemas import TEST, searched_hyperparameters, trials_schema
from leuktune.leaderboard.tables import table
from leuktune.runfolder import RunFolder


def migrate(folder: RunFolder) -> None:
    """A run written before each stage had its own table, given them (once, by the first stage
    that writes into it again: a resumed search, an evaluation): the search's rows and the test
    figures of its one leaderboard, checkpoints made relative to the run. Its checkpoints are not
    touched (the temperature an earlier release kept there is in ``test.parquet`` now). A table
    stored under an earlier name (``runfolder.RENAMED_FILES``) is written under today's too, so that
    the stage adds its rows to it."""
    for earlier, today in runfolder.RENAMED_FILES.items():
        if folder.exists(earlier) and not folder.exists(today):
            folder.write_table(today, read_renamed(folder, today))  # the earlier file is left as it was
    old = earlier_release(folder)
    if old is None:
        return
    searched = searched_part(old)
    searched["checkpoint"] = [folder.relative(value) for value in searched["checkpoint"]]
    folder.write_table(runfolder.TEST, table(tested_part(old).to_dict("records"), TEST))
    record = ensemble(folder)
    if record is not None:
        folder.write_text(runfolder.ENSEMBLE, dataclasses.replace(
            record, checkpoints=[folder.relative(c) for c in record.checkpoints]).to_json())
    # last: the search's table is what marks a run as migrated
    folder.write_table(runfolder.TRIALS_TABLE, table(searched.to_dict("records"),
                                                     trials_schema(searched_hyperparameters(searched.columns))))
    write(folder)
