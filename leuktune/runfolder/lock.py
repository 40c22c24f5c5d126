"""One search per run folder: a lock that a live search holds and a dead one gives up.

The lock is a small file in the run folder (local disk or bucket) naming the search's host,
process and start, with a heartbeat refreshed every few seconds. Another search may take the
folder only when the heartbeat is stale, or when the holder's process on this same host is gone
(a driver killed with SIGKILL leaves its lock behind, and ``--resume`` should not wait for it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime, timezone

from leuktune import runfolder
from leuktune.runfolder import RunFolder
from leuktune.errors import LeuktuneError

HEARTBEAT_S = 5.0
STALE_S = 30.0


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
    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._done = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)

    def holder(self) -> dict | None:
        """The live search holding the folder, if any."""
        if not self.folder.exists(runfolder.LOCK):
            return None
        try:
            held = json.loads(self.folder.read_text(runfolder.LOCK))
        except (OSError, ValueError):
            return None
        if time.time() - held.get("heartbeat", 0) > STALE_S:
            return None
        if held.get("host") == self.record["host"] and not _alive(int(held.get("pid", -1))):
            return None
        return held

    def _write(self) -> None:
        self.folder.write_text(runfolder.LOCK, json.dumps({**self.record, "heartbeat": time.time()}))

    def _heartbeat(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            try:
                self._write()
            except OSError:  # a storage hiccup: the next beat tries again
                pass

    def __enter__(self) -> "SearchLock":
        held = self.holder()
        if held is not None:
            raise FolderInUse(
                f"{self.folder.uri()} is in use by a live search (pid {held.get('pid')} on {held.get('host')}, "
                f"started {held.get('started_at')}); wait for it to end, or give this search another name "
                "(--set name=...)")
        self._write()
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._beat.join()
        self.folder.remove(runfolder.LOCK)
