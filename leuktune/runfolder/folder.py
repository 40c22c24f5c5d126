"""A run folder, ``<storage.path>/<name>/``, on a local disk or in a bucket, and its path rules.

A run folder travels: every location a table or record inside it holds is relative to the folder
(a checkpoint is ``tune/<trial>/checkpoint_000007``), so a copy, a move or a sync down from the
bucket opens where it is now (``RunFolder.existing``); nothing reads the storage path its config
recorded once the run exists. Reading and writing its files is ``RunFiles`` (tables.py); this
machine's folders for it, ``MachineCaches`` (caches.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import yaml

from leuktune import uris
from leuktune.config import ExperimentConfig
from leuktune.errors import LeuktuneError
from leuktune.runfolder.caches import MachineCaches
from leuktune.runfolder.layout import CONFIG, ENSEMBLE, TRIALS, TUNE
from leuktune.runfolder.tables import RunFiles
from leuktune.uris import is_uri


class RunFolderError(LeuktuneError, ValueError):
    """A location that is not a run folder, naming it."""


@dataclass(frozen=True)
class RunFolder(RunFiles, MachineCaches):
    storage: str  # as configured: an absolute local folder, or a URI
    name: str
    cache_dir: str | None = None  # data.cache_dir

    @classmethod
    def of(cls, cfg) -> "RunFolder":
        """The run folder of an ``ExperimentConfig``; a relative local storage path is taken from here."""
        storage = cfg.storage.path
        if not is_uri(storage):
            storage = uris.local_path(storage)
        cache = cfg.data.cache_dir
        return cls(storage, cfg.name, str(Path(cache).expanduser().absolute()) if cache else None)

    @classmethod
    def resolved(cls, cfg):
        """``cfg`` with its storage path made absolute, as trials and checkpoints must carry it:
        they are read in other working directories."""
        storage = cls.of(cfg).storage
        return cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"path": storage})})

    @classmethod
    def existing(cls, location: str | Path) -> "RunFolder":
        """A run folder that exists, where it is now (copied, moved or synced down from a bucket):
        its config is read for ``data.cache_dir`` only (this machine's cache of decoded images;
        without one, beside the run for a local folder, ``~/.cache/leuktune`` for a bucket), never
        for the storage path it recorded."""
        folder = cls.at(location)
        if not folder.exists(CONFIG):
            raise RunFolderError(f"{location}: not a run folder (no {CONFIG}); a run folder is <storage.path>/<name>, "
                                 "as a search writes it")
        return cls.of(folder.config())

    @classmethod
    def enclosing(cls, location: str | Path, levels: int = 5) -> "RunFolder | None":
        """The run folder that holds ``location`` (a checkpoint folder: ``<run>/tune/<trial>/checkpoint_N``),
        found by its ``config.yaml`` at most ``levels`` folders up; None for a checkpoint kept alone."""
        parent = str(location)
        for _ in range(levels):
            parent, name = uris.split_last(parent)
            if not name:
                return None
            try:
                return cls.existing(parent)
            except RunFolderError:
                continue
        return None

    @classmethod
    def at(cls, location: str | Path) -> "RunFolder":
        """The run folder at a path or URI (its parent is the storage, its last part the name).

        >>> run = RunFolder.at("s3://bucket/runs/cnmc?endpoint_override=localhost:9000")
        >>> run.storage, run.name
        ('s3://bucket/runs?endpoint_override=localhost:9000', 'cnmc')
        """
        return cls(*uris.split_last(location))

    # -- where things are

    @property
    def fs(self) -> pafs.FileSystem:
        return self._resolved[0]

    @property
    def _resolved(self) -> tuple[pafs.FileSystem, str]:
        return uris.resolve(self.storage)

    @property
    def local(self) -> bool:
        return not is_uri(self.storage)

    @property
    def path(self) -> str:
        """The run folder in its filesystem (for a bucket: ``bucket/prefix/name``)."""
        return f"{self._resolved[1].rstrip('/')}/{self.name}"

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def relative(self, location: str | None) -> str | None:
        """A location inside this run as the run's tables keep it: relative to the folder
        (``tune/<trial>/checkpoint_000007``). One recorded by an earlier release as the absolute
        place the run was then (maybe elsewhere) keeps the part from its ``tune/`` or ``trials/``
        folder on, which is where it is in this run."""
        if location is None or location != location or not str(location):
            return None
        text = str(location)
        if not is_uri(text) and not os.path.isabs(text):
            return text
        fs_path = uris.resolve(text)[1] if is_uri(text) else uris.local_path(text)
        if fs_path.startswith(self.path + "/"):
            return fs_path[len(self.path) + 1:]
        for marker in (f"/{TUNE}/", f"/{TRIALS}/"):
            at = fs_path.rfind(marker)
            if at >= 0:
                return fs_path[at + 1:]
        if os.path.basename(fs_path) == ENSEMBLE:  # the ensemble row's of an earlier release
            return ENSEMBLE
        raise RunFolderError(f"{location} is not inside the run folder {self.uri()}")

    def located(self, relative: str | None) -> str | None:
        """A location the run's tables keep (relative to the run) as a path or URI of where the
        run is now; an absolute one of an earlier release is moved here first (``relative``)."""
        relative = self.relative(relative)
        return None if relative is None else self.uri(self.file(relative))

    def uri(self, fs_path: str | None = None) -> str:
        """A path of this storage's filesystem as the user can pass it back: a local path, or a
        URI with the storage's scheme, credentials and options."""
        return uris.child(self.storage, fs_path or self.path)

    @property
    def tune(self) -> str:
        """Ray Tune's run of the search's trials (``TUNE``)."""
        return self.file(TUNE)

    @property
    def trials(self) -> str:
        """Where Ray Train launched trials keep their checkpoints, one folder per trial id."""
        return self.file(TRIALS)

    # -- the run's config

    def saved_config(self, validate: bool = True):
        """The run's own ``config.yaml``: an ``ExperimentConfig`` (or, not validated, the plain mapping)."""
        raw = yaml.safe_load(self.read_text(CONFIG)) or {}
        if not validate:
            return raw
        return ExperimentConfig.model_validate(raw)

    def config(self) -> ExperimentConfig:
        """The run's config as it applies where the run is now: its ``config.yaml`` with this
        folder's storage and name, so whatever is derived from it (``RunFolder.of``: features,
        decoded images, a cross-validation's trials) is here, not where the run was written."""
        cfg = self.saved_config()
        return cfg.model_copy(update={"name": self.name,
                                      "storage": cfg.storage.model_copy(update={"path": self.storage})})
