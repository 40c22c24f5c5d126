"""Locations that are a folder of this machine or an object in a bucket, read through pyarrow.

A location is a local path (``/data/cells``, ``~/cells``, ``file:///data/cells``) or a URI that
pyarrow reads: ``s3://bucket/prefix``, ``gs://bucket/prefix`` and, for an S3-compatible server
such as MinIO, ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``. Credentials come
from the environment or the machine's role, or from the URI (``s3://KEY:SECRET@bucket/...``).
The run folder (``storage.path``), checkpoints and the data (``data.root``) all take these forms.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:  # pyarrow takes 0.1 s to import; validating a config (is_uri) does not need it
    import pyarrow.fs as pafs

# The characters a URI path may carry as they are (RFC 3986's pchar): Tune's trial folders
# (``..._lr=0.01,backbone=...``) stay readable; a space, '#', '?' or '%' in a key is escaped.
_PATH_SAFE = "/:@!$&'()*+,;="
# Object stores whose pyarrow path is the bucket followed by the key.
_BUCKET_SCHEMES = {"s3", "gs", "gcs"}

_filesystems: dict[tuple[str, str, str], pafs.FileSystem] = {}
_lock = threading.Lock()


def is_uri(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def local_path(location: str | Path) -> str:
    """A local location as an absolute path (``~`` expanded, symlinks kept)."""
    return str(Path(str(location).removeprefix("file://")).expanduser().absolute())


def split_last(location: str | Path) -> tuple[str, str]:
    """(the parent location, the last part's name): a local path made absolute; a URI's options
    (``?endpoint_override=...``) stay with the parent, which is a location of the same store.

    >>> split_last("s3://bucket/runs/cnmc?scheme=http")
    ('s3://bucket/runs?scheme=http', 'cnmc')
    """
    text = str(location).rstrip("/")
    if not is_uri(text):
        path = Path(local_path(text))
        return str(path.parent), path.name
    parts = urlsplit(text)
    parent, _, name = parts.path.rpartition("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parent}{query}", unquote(name)


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path in it) of a location. A bucket's filesystem is made once per process
    and endpoint (making one may ask the server for the bucket's region)."""
    # pyarrow only for a bucket or filesystem access: parsing a location does not need it
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), local_path(location)
    text = str(location)
    parts = urlsplit(text)
    key = (parts.scheme, parts.netloc, parts.query)
    with _lock:
        fs = _filesystems.get(key)
    if fs is None or parts.scheme not in _BUCKET_SCHEMES:
        fs, path = pafs.FileSystem.from_uri(text)
        with _lock:
            _filesystems[key] = fs
        return fs, path
    return fs, parts.netloc.rpartition("@")[2] + unquote(parts.path)


def child(base: str | Path, fs_path: str) -> str:
    """The location of ``fs_path`` (a path of ``base``'s filesystem) as a user passes it back: a
    local path, or a URI with ``base``'s scheme, credentials and options.

    >>> child("s3://bucket/runs?endpoint_override=localhost:9000", "bucket/runs/a b/leaderboard.parquet")
    's3://bucket/runs/a%20b/leaderboard.parquet?endpoint_override=localhost:9000'
    """
    if not is_uri(base):
        return fs_path
    parts = urlsplit(str(base))
    user = parts.netloc.rpartition("@")[0]
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{user + '@' if user else ''}{quote(fs_path, safe=_PATH_SAFE)}{query}"


def identity(location: str | Path) -> str:
    """What names a file whatever the credentials or the endpoint's spelling: a local path as it
    is, a URI without its user part and options (cache keys and data fingerprints use it).

    >>> identity("s3://KEY:SECRET@bucket/cells?endpoint_override=minio:9000&scheme=http")
    's3://bucket/cells'
    """
    if not is_uri(location):
        return str(location)
    parts = urlsplit(str(location))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"

