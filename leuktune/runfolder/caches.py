"""This machine's folders for a run: what must stay on the local disk whatever the run's storage.

Decoded images, frozen backbones' features and the built-in data set are kept under
``data.cache_dir`` (without one: beside the run for a local folder, ``~/.cache/leuktune`` for a
bucket); the files the driver writes while the run goes on (the study's SQLite file,
TensorBoard's event files) are a bucket run's local copy, synced up as they change.

``MachineCaches`` is the part of ``leuktune.runfolder.RunFolder`` that says where these are; the
folder gives it ``storage``, ``name``, ``cache_dir``, ``local``, ``path`` and ``uri()``.
"""

from __future__ import annotations

from pathlib import Path

from leuktune.runfolder.layout import STUDY


class MachineCaches:
    """Where a run's files on this machine's disk are."""

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
