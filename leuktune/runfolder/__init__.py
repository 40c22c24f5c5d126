"""Where a run's files live, derived in one place, on a local disk or in a bucket.

``<storage.path>/<name>/`` holds the resolved ``config.yaml``, ``split.parquet``, each stage's
own table (the search's ``trials.parquet`` and ``history.parquet``; the final evaluation's
``test.parquet``, ``evaluation.parquet``, ``test_predictions.parquet``, ``ensemble.json`` and
``cv.parquet``; ``external/``), the ``leaderboard.parquet`` derived from them (leuktune.leaderboard),
``rejected.parquet`` and ``near_duplicates.parquet`` when there are any, the search's Optuna study
``study.db`` (leuktune.study), TensorBoard's event files under ``tensorboard/`` when asked for, Ray Tune's state and the
trials' checkpoints under ``tune/`` (and ``trials/`` for Ray Train launched trials), and the report
under ``report/``. ``storage.path`` is a local folder or a URI (leuktune.uris). Decoded images,
frozen backbones' features and the built-in data set stay on this machine's disk (``data.cache_dir``).

A run folder travels: every location a table or record inside it holds is relative to the folder
(a checkpoint is ``tune/<trial>/checkpoint_000007``), so a copy, a move or a sync down from the
bucket opens where it is now (``RunFolder.existing``); nothing reads the storage path its config
recorded once the run exists.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from leuktune import uris
from leuktune.config import ExperimentConfig
from leuktune.errors import LeuktuneError
from leuktune.uris import is_uri

CONFIG = "config.yaml"
SPLIT = "split.parquet"
LEADERBOARD = "leaderboard.parquet"  # derived from the stages' tables (leuktune.leaderboard.derive)
TRIALS_TABLE = "trials.parquet"  # the search's: a row per trial (a run of an earlier release has none)
TEST = "test.parquet"  # the final evaluation's: a row per model scored on the test split
ENSEMBLE = "ensemble.json"  # the weighted ensemble of the best trials: members, weights, temperatures
EXTERNAL = "external"  # external test sets: <name>.parquet (metrics), <name>.predictions.parquet
HISTORY = "history.parquet"
STUDY = "study.db"  # the search's Optuna study (SQLite), unless search.study.storage names a database
TENSORBOARD = "tensorboard"  # tracking.tensorboard: one folder of event files per trial
REJECTED = "rejected.parquet"
NEAR_DUPLICATES = "near_duplicates.parquet"
LOCK = "search.lock"
# the final evaluation's tables (leuktune.evaluate)
EVALUATION = "evaluation.parquet"
PREDICTIONS = "test_predictions.parquet"
CV = "cv.parquet"
TUNE = "tune"  # Ray Tune's run: the searcher's state and the trials' folders (checkpoints)
TRIALS = "trials"  # Ray Train launched trials' runs, one per trial id
REPORT = "report"
EXPORT = "export"


def external(name: str, part: str | None = None) -> str:
    """An external test set's table in the run folder: its metrics, or ``part`` (predictions, near_training)."""
    return f"{EXTERNAL}/{name}{'.' + part if part else ''}.parquet"


def history_part(trial_id: str) -> str:
    """A running trial's epochs so far, stored at once (they join HISTORY when the trial ends)."""
    return f"history/{trial_id}.parquet"


class RunFolderError(LeuktuneError, ValueError):
    """A location that is not a run folder, naming it."""


@dataclass(frozen=True)
class RunFolder:
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

    @property
    def on_this_disk(self) -> Path:
        """The run folder as files on this machine's disk, for what needs a local file while the driver
        writes it (the study's SQLite file, TensorBoard's event files): a local or NFS run's own folder;
        a bucket run's is on the driver's disk, one per run URI, copied up to the bucket as it changes."""
        if self.local:
            return Path(self.path)
        import hashlib  # only a bucket run needs a key for its URI

        key = hashlib.sha256(self.uri().encode()).hexdigest()[:16]
        return self._local_root() / "driver" / f"{self.name}-{key}"

    @property
    def study_file(self) -> Path:
        """The SQLite file of the run's study on this machine (leuktune.study)."""
        return self.on_this_disk / STUDY

    @property
    def cache(self) -> Path:
        """Decoded images, keyed by the files and the size: on this machine's disk."""
        return self._local_root() / "cache"

    @property
    def features(self) -> Path:
        """Frozen backbones' features, keyed by weights, data and views: on this machine's disk."""
        return self._local_root() / "features"

    @property
    def datasets(self) -> Path:
        """Where the built-in synthetic set is written: on this machine's disk."""
        return self._local_root() / "datasets"

    def _local_root(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        return Path(self.storage) if self.local else Path.home() / ".cache" / "leuktune"

    # -- reading and writing

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.file(name)).type != pafs.FileType.NotFound

    def makedirs(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Whole or not at all: a local file is written aside and renamed over the old one; an
        object store replaces an object in one request."""
        target = self.file(name)
        if not self.local:  # a bucket has no folders to make (pyarrow would add marker objects above the run)
            with self.fs.open_output_stream(target) as out:
                out.write(data)
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{os.path.dirname(target)}/.{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, target)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.file(name)) as f:
            return f.read()

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def write_table(self, name: str, table: pa.Table | pd.DataFrame) -> None:
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.write_bytes(name, sink.getvalue())

    def read_table(self, name: str, schema: pa.Schema | None = None) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(name)), schema=schema)

    def read_frame(self, name: str) -> pd.DataFrame:
        return self.read_table(name).to_pandas()

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

    def remove(self, name: str) -> None:
        if self.exists(name):
            self.fs.delete_file(self.file(name))

    def listdir(self, fs_path: str) -> list[str]:
        """Names in a folder of this storage (fs path); none if it is not there."""
        infos = self.fs.get_file_info(pafs.FileSelector(fs_path, allow_not_found=True))
        return sorted(info.base_name for info in infos)
