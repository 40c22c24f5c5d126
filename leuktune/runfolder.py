"""Where a run's files live, derived in one place.

``<storage.path>/<name>/`` holds the resolved ``config.yaml``, ``split.parquet``,
``leaderboard.parquet``, ``history.parquet``, ``rejected.parquet`` and
``near_duplicates.parquet`` when there are any, the trials' checkpoints under ``trials/``,
Ray Tune's own state under ``tune/`` and the report under ``report/``. Decoded images and
the built-in data set are shared by every run of a storage, beside the run folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
SPLIT = "split.parquet"
LEADERBOARD = "leaderboard.parquet"
HISTORY = "history.parquet"
REJECTED = "rejected.parquet"
NEAR_DUPLICATES = "near_duplicates.parquet"


@dataclass(frozen=True)
class RunFolder:
    storage: Path  # absolute: trials run in other working directories
    name: str

    @classmethod
    def resolved(cls, cfg):
        """``cfg`` with its storage path made absolute, as trials and checkpoints must carry it:
        they are read in other working directories."""
        storage = cls.of(cfg).storage
        return cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"path": str(storage)})})

    @classmethod
    def of(cls, cfg) -> "RunFolder":
        """The run folder of an ``ExperimentConfig``; a relative storage path is taken from here."""
        return cls(Path(cfg.storage.path).expanduser().absolute(), cfg.name)

    @property
    def path(self) -> Path:
        return self.storage / self.name

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def trials(self) -> Path:
        """Each trial's checkpoints, in a folder named by its trial id."""
        return self.path / "trials"

    @property
    def cache(self) -> Path:
        """Decoded images, keyed by the files and the size: shared by the runs of this storage."""
        return self.storage / "cache"

    @property
    def datasets(self) -> Path:
        """Where the built-in synthetic set is written."""
        return self.storage / "datasets"
