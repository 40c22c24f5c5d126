"""The search's Optuna study in a database, where Optuna's own tools (optuna-dashboard, a second
search's warm start, ``optuna.load_study``) read it while the search runs or after.

By default the study is an SQLite file of the run folder (``study.db``): it travels with the run.
A bucket cannot hold a live SQLite file, so a bucket run's study is kept on the driver's disk
(``RunFolder.study_file``, under ``RunFolder.on_this_disk``) and copied into the run folder after
each change of its trials (``publish``); ``--resume`` on a new head starts from that copy (``fetch``). ``search.study.storage``
names any SQLAlchemy URL instead (PostgreSQL for a lab's shared server); the run's ``config.yaml``
records it. This module says where a study is and reads a run's study back (``Run.study``,
the dashboard); setting one up for a search is leuktune.tuning.study_setup's.

>>> place = StudyPlace(RunFolder.at("/tmp/runs/cnmc"), storage=None, name="cnmc")
>>> place.url()
'sqlite:////tmp/runs/cnmc/study.db'
>>> StudyPlace(RunFolder.at("/tmp/runs/cnmc"), "postgresql://leuk:secret@db.lab:5432/optuna", "cnmc").shown()
'postgresql://leuk:***@db.lab:5432/optuna'
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from leuktune import runfolder
from leuktune.errors import LeuktuneError
from leuktune.runfolder import RunFolder

if TYPE_CHECKING:  # Optuna and SQLAlchemy only when a study is opened
    import optuna

# SQLite waits this long for a lock (the dashboard reading while the driver writes) before it fails.
SQLITE_TIMEOUT_S = 30


class StudyError(LeuktuneError, RuntimeError):
    """A study that cannot be reached, created or found, naming its storage."""


@dataclass(frozen=True)
class StudyPlace:
    """Where a run's study is: the run folder, ``search.study.storage`` (None: SQLite in the run) and its name."""

    folder: RunFolder
    storage: str | None
    name: str

    @classmethod
    def of(cls, cfg, folder: RunFolder) -> StudyPlace:
        """The study of an experiment whose run is ``folder`` (``search.study.name`` or the experiment's name)."""
        study = cfg.search.study
        return cls(folder, study.storage, study.name or cfg.name)

    @property
    def in_run(self) -> bool:
        """Whether the run folder holds the study (the default), rather than a database of its own."""
        return self.storage is None

    def url(self) -> str:
        """The SQLAlchemy URL Optuna opens: on this machine's disk for a study the run holds."""
        return self.storage or f"sqlite:///{self.folder.study_file}"

    def shown(self) -> str:
        """The URL as it may be printed: without its password."""
        from sqlalchemy.engine import make_url  # SQLAlchemy only when a study is named (see TYPE_CHECKING)

        return make_url(self.url()).render_as_string(hide_password=True)

    def storage_object(self, *, create: bool = True) -> optuna.storages.RDBStorage:
        """Optuna's storage of the study; ``create=False`` reads only (no table is made, nothing written).
        A database that cannot be reached is a ``StudyError`` naming it."""
        import optuna  # Optuna only when a study is opened (see TYPE_CHECKING)

        url = self.url()
        if create and self.in_run:  # a bucket run's driver copy is the first file of its folder on this disk
            self.folder.study_file.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=not create)
        except Exception as err:  # noqa: BLE001 - SQLAlchemy's and drivers' errors vary; each is the same mistake
            key = "search.study.storage" if self.storage else "the run's study"
            raise StudyError(f"{key} {self.shown()}: cannot open the study database "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:300]})") from None

    def exists(self) -> bool:
        """Whether the study is there (a run's SQLite file is not opened when it is absent: SQLite would make it)."""
        if self.in_run and not self.folder.study_file.exists():
            return False
        import optuna  # Optuna only when a study is opened (see TYPE_CHECKING)

        return self.name in optuna.get_all_study_names(self.storage_object(create=False))

    def publish(self) -> None:
        """A bucket run: copy the driver's study into the run folder (a consistent snapshot, by
        SQLite's backup, while the search writes it). A local or NFS run holds it already."""
        if not self.in_run or self.folder.local or not self.folder.study_file.exists():
            return
        with tempfile.TemporaryDirectory() as tmp:
            snapshot = os.path.join(tmp, runfolder.STUDY)
            _backup(str(self.folder.study_file), snapshot)
            with open(snapshot, "rb") as f:
                self.folder.write_bytes(runfolder.STUDY, f.read())

    def fetch(self) -> None:
        """A bucket run resumed: the driver's copy from the run folder's, unless this machine has it
        (a driver restarted on the same head keeps the newer copy it wrote)."""
        target = self.folder.study_file
        if not self.in_run or self.folder.local or target.exists() or not self.folder.exists(runfolder.STUDY):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(self.folder.read_bytes(runfolder.STUDY))
        os.replace(tmp, target)

    def forget_driver_copy(self) -> None:
        """A new search of a bucket run: a copy on this disk is of an earlier search of that URI, gone since."""
        if self.in_run and not self.folder.local:
            self.folder.study_file.unlink(missing_ok=True)


def _backup(source: str, target: str) -> None:
    src, dst = sqlite3.connect(source, timeout=SQLITE_TIMEOUT_S), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def load(folder: RunFolder) -> optuna.Study:
    """A finished or running search's study, read only: from the run folder, or from the database
    its ``search.study.storage`` names. A bucket run's (unless this machine is the driver that keeps
    it) is copied down, read into memory and its copy deleted: the study returned is a snapshot. A
    ``StudyError`` when the run has none (a search of an earlier release kept it in memory only).

    >>> study = load(RunFolder.existing("runs/synthetic-default"))  # doctest: +SKIP
    >>> study.trials_dataframe()[["number", "state", "value"]]  # doctest: +SKIP
    """
    import optuna  # Optuna only when a study is opened (see TYPE_CHECKING)

    with readable(folder) as place:
        storage = place.storage_object(create=False)
        if place.folder is folder:  # where the study lives: read as it goes on
            return optuna.load_study(study_name=place.name, storage=storage)
        try:  # a copy taken down for this read: kept in memory, the file goes
            memory = optuna.storages.InMemoryStorage()
            optuna.copy_study(from_study_name=place.name, from_storage=storage, to_storage=memory)
            return optuna.load_study(study_name=place.name, storage=memory)
        finally:
            storage.engine.dispose()  # SQLite's connections to the copy, closed before it is deleted


@contextlib.contextmanager
def readable(folder: RunFolder) -> Iterator[StudyPlace]:
    """``with readable(folder) as place``: the run's study as a reader finds it (see ``load``) for the
    block; a bucket run's copy is taken down to a temporary folder of this machine, deleted when
    the block ends."""
    place = StudyPlace.of(folder.saved_config(), folder)
    with contextlib.ExitStack() as stack:
        if place.in_run and not folder.local and not folder.study_file.exists() and folder.exists(runfolder.STUDY):
            copy = RunFolder(stack.enter_context(tempfile.TemporaryDirectory(prefix="leuktune-study-")), folder.name)
            os.makedirs(copy.path)
            with open(copy.file(runfolder.STUDY), "wb") as f:
                f.write(folder.read_bytes(runfolder.STUDY))
            place = StudyPlace(copy, None, place.name)
        if not place.exists():
            where = place.shown() if place.storage else f"{folder.uri()} has no {runfolder.STUDY}"
            raise StudyError(f"{folder.uri()}: no study {place.name!r} ({where}); a search of this release keeps its "
                             "study there (an earlier release's search kept it in memory only)")
        yield place
