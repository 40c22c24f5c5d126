"""One search per run folder: a lock that a live search holds and a dead one gives up.

The lock is a small file in the run folder (local disk or bucket) naming the search's host,
process, start and an owner token, with a heartbeat refreshed every few seconds. Another search
may take the folder only when the heartbeat is stale, or when the holder's process on this same
host is gone (a driver killed with SIGKILL leaves its lock behind, and ``--resume`` should not
wait for it).

Taking it is one step that only one search can win: on a local disk (or NFS) the lock file is
made complete beside the folder and linked into place, which fails when the file exists (what
``O_CREAT|O_EXCL`` does, without a moment when the file is there and empty); a stale one is first
renamed aside, which one search only can do. A bucket offers no such step through pyarrow, so
the search writes its lock, waits a moment and reads it back: of searches that wrote together
the last one holds it, and the others find it live. A search lets go of (and its heartbeat
rewrites) only a lock that still carries its own token: one taken over by another search is
that search's.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from leuktune import runfolder
from leuktune.runfolder import RunFolder
from leuktune.errors import LeuktuneError

HEARTBEAT_S = 5.0
STALE_S = 30.0
SETTLE_S = 1.0  # a bucket: how long a written lock waits before it is read back (longer than a taker's check-to-write)


class FolderInUse(LeuktuneError, RuntimeError):
    """A run folder that a live search is using."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SearchLock:
    """``with SearchLock(folder):`` the block runs as the folder's one search, or FolderInUse is raised."""

    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "token": uuid.uuid4().hex}
        self._done = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)

    def _read(self) -> dict | None:
        """The lock as stored, None when there is none; {} when it cannot be read."""
        try:
            return json.loads(self.folder.read_text(runfolder.LOCK))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {} if self.folder.exists(runfolder.LOCK) else None

    def _live(self, held: dict | None) -> bool:
        if not held:
            return False
        if time.time() - held.get("heartbeat", 0) > STALE_S:
            return False
        return not (held.get("host") == self.record["host"] and not _alive(int(held.get("pid", -1))))

    def holder(self) -> dict | None:
        """The live search holding the folder, if any."""
        held = self._read()
        return held if self._live(held) else None

    def _content(self) -> bytes:
        return json.dumps({**self.record, "heartbeat": time.time()}).encode()

    def _mine(self) -> bool:
        return (self._read() or {}).get("token") == self.record["token"]

    def _take_local(self, found: dict | None) -> bool:
        """Whether this search now holds the local lock; ``found``: the (dead) lock there, if any."""
        target = self.folder.file(runfolder.LOCK)
        aside = f"{target}.{self.record['token']}"
        if found is not None:  # stale or unreadable: renamed aside by one search only, then looked at
            try:
                os.rename(target, aside)
            except FileNotFoundError:  # another search moved it first
                return False
            if self._stored(aside).get("token") != found.get("token"):  # a fresh lock moved by mistake: back
                try:
                    os.link(aside, target)
                except FileExistsError:
                    pass
            os.remove(aside)
            return False  # look again: the folder is free now, or held
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(aside, "wb") as out:
            out.write(self._content())
        try:
            os.link(aside, target)  # fails if the file exists: O_EXCL, with the content already in it
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(aside)

    @staticmethod
    def _stored(path: str) -> dict:
        try:
            with open(path, "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return {}

    def _take_bucket(self) -> bool:
        self.folder.write_bytes(runfolder.LOCK, self._content())
        time.sleep(SETTLE_S)
        return self._mine()

    def __enter__(self) -> "SearchLock":
        while True:
            found = self._read()
            if self._live(found):
                raise FolderInUse(
                    f"{self.folder.uri()} is in use by a live search (pid {found.get('pid')} on {found.get('host')}, "
                    f"started {found.get('started_at')}); wait for it to end, or give this search another name "
                    "(--set name=...)")
            if self._take_local(found) if self.folder.local else self._take_bucket():
                break
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            try:
                if not self._mine():
                    print(f"[leuktune] WARNING: {self.folder.uri()}: this search's lock was taken over by another "
                          "search (its heartbeat had stopped for a while)", flush=True)
                    return
                self.folder.write_bytes(runfolder.LOCK, self._content())
            except OSError:  # a storage hiccup: the next beat tries again
                pass

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._beat.is_alive():
            self._beat.join()
        try:
            if self._mine():
                self.folder.remove(runfolder.LOCK)
        except OSError:  # a lock left behind goes stale; the next search takes the folder then
            pass
