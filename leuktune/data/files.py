"""A dataset's files wherever a cluster keeps them: a folder of the driver's machine, a folder
every node mounts (NFS), or a bucket (``s3://``, ``gs://``; the forms of leuktune.uris).

The sources (leuktune.data.sources) read a root's listing, not the disk: one walk gives each
file's location as the manifest stores it (an absolute local path, or a URI), its size and its
modification time (which key the decoded cache), and the folders. ``read_bytes`` opens a
manifest's location on whichever node decodes it.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd
import pyarrow.fs as pafs

from leuktune import uris
from leuktune.errors import LeuktuneError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class DataError(LeuktuneError, ValueError):
    """A dataset problem, naming the path and what was expected."""


@dataclass(frozen=True)
class Entry:
    """One file under a root."""

    rel: str  # its path under the root, with '/'
    location: str  # as the manifest stores it: an absolute local path (symlinks resolved) or a URI
    bytes: int
    mtime_ns: int

    @property
    def is_image(self) -> bool:
        return PurePosixPath(self.rel).suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class Listing:
    """Every file and folder under a root; hidden ones (macOS's ``._*`` companions,
    ``.ipynb_checkpoints``) are not part of a data set and are left out."""

    root: str  # the root as given, made absolute when local
    files: dict[str, Entry]  # by rel, sorted
    folders: frozenset[str]  # rels

    @property
    def name(self) -> str:
        """The root's own name (the last part of its path)."""
        return PurePosixPath(uris.resolve(self.root)[1].rstrip("/")).name

    def location_of(self, rel: str) -> str:
        """A folder or file under the root, as the user would name it (for messages)."""
        return uris.child(self.root, f"{uris.resolve(self.root)[1].rstrip('/')}/{rel}") if rel else self.root

    def images(self, under: str = "") -> list[Entry]:
        """The image files under the folder ``under`` (a rel; '' is the root), by suffix, sorted."""
        prefix = f"{under}/" if under else ""
        return [e for rel, e in self.files.items() if rel.startswith(prefix) and e.is_image]

    def subfolders(self, of: str = "") -> list[str]:
        """The rels of the folders directly in ``of``, sorted."""
        return sorted(f for f in self.folders if PurePosixPath(f).parent == PurePosixPath(of))


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _walk_local(root: str) -> tuple[list[Entry], set[str]]:
    entries, folders, seen = [], set(), set()
    # Symlinked folders are followed (images linked into a store are common on clusters); a link
    # back to a folder already walked is not, so a loop ends.
    for here, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_here = os.path.relpath(here, root)
        for d in dirs:
            folders.add(d if rel_here == "." else f"{rel_here}/{d}")
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(here, name)
            try:
                stat = os.stat(path)
            except OSError:  # a dangling link: not a file of the set
                continue
            rel = name if rel_here == "." else f"{rel_here}/{name}"
            entries.append(Entry(rel, os.path.realpath(path), stat.st_size, stat.st_mtime_ns))
    return entries, folders


def _walk_bucket(root: str, fs: pafs.FileSystem, path: str) -> tuple[list[Entry], set[str]]:
    entries, folders = [], set()
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        rel = info.path[len(path):].lstrip("/")
        if not rel or _hidden(rel):
            continue
        if info.type == pafs.FileType.Directory:
            folders.add(rel)
        elif info.type == pafs.FileType.File:
            entries.append(Entry(rel, uris.child(root, info.path), info.size, info.mtime_ns or 0))
            # An object store has no folders, only keys: a key's prefixes are its folders.
            folders.update(str(p) for p in PurePosixPath(rel).parents if str(p) != ".")
    return entries, folders


def walk(root: str, expected: str) -> Listing:
    """Every file and folder under ``root`` (a local folder or a bucket prefix); a root that is not
    a folder, or cannot be read, is a ``DataError`` naming it and saying what was ``expected``."""
    fs, path = uris.resolve(root)
    root = uris.child(root, path)  # a local root made absolute; a URI as given
    try:
        kind = fs.get_file_info(path).type
        if kind != pafs.FileType.Directory:
            raise DataError(f"{root}: dataset folder not found (data.root); expected {expected}")
        entries, folders = (_walk_local(path) if isinstance(fs, pafs.LocalFileSystem)
                            else _walk_bucket(root, fs, path))
    except OSError as err:  # an unreachable server, a missing bucket, no permission
        raise DataError(f"{root}: cannot be listed (data.root): {err}; expected {expected}") from None
    return Listing(root, {e.rel: e for e in sorted(entries, key=lambda e: e.rel)}, frozenset(folders))


def read_bytes(location: str) -> bytes:
    """A file's bytes, local or in a bucket (OSError when this machine cannot read it)."""
    if not uris.is_uri(location):
        with open(location, "rb") as f:
            return f.read()
    fs, path = uris.resolve(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_table(location: str) -> pd.DataFrame:
    """A CSV or Parquet file, local or in a bucket."""
    data = io.BytesIO(read_bytes(location))
    return pd.read_parquet(data) if uris.split_last(location)[1].lower().endswith(".parquet") else pd.read_csv(data)


def _kind(location: str) -> pafs.FileType:
    try:
        fs, path = uris.resolve(location)
        return fs.get_file_info(path).type
    except OSError:  # an unreachable server or bucket: nothing there as far as this machine knows
        return pafs.FileType.NotFound


def is_file(location: str) -> bool:
    return _kind(location) == pafs.FileType.File


def is_folder(location: str) -> bool:
    return _kind(location) == pafs.FileType.Directory


def stat(locations: list[str]) -> list[tuple[int, int] | None]:
    """(bytes, mtime_ns) of each file, or None where it is not a file this machine can see.
    A bucket answers one request per file: they are asked many at a time."""
    def one(location: str) -> tuple[int, int] | None:
        try:
            if not uris.is_uri(location):
                s = os.stat(location)
                return s.st_size, s.st_mtime_ns
            fs, path = uris.resolve(location)
            info = fs.get_file_info(path)
        except OSError:
            return None
        return (info.size, info.mtime_ns or 0) if info.type == pafs.FileType.File else None

    if not any(uris.is_uri(loc) for loc in locations):
        return [one(loc) for loc in locations]
    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(one, locations))
