"""Which pretrained weights a backbone loaded, in a few words the leaderboard keeps
(``backbone_weights``): a file's name and the start of its sha256, a Hub id, or no weights at all.

Two files of one name may hold different weights (DINOv2's general ones and DinoBloom's hematology
ones both fit ``vit_small_patch14_dinov2``), so a file is named with its digest. Hashing a weights
file costs about a second a gigabyte, so each file is hashed once: the digest is remembered in the
process and in a small file of the user's cache (by path, size and modification time), and the
trials that follow read it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

RANDOM_INIT = "none (random init)"
DIGEST_CHARS = 12  # as git shortens a commit's: enough to tell two files apart
_remembered: dict[tuple[str, int, int], str] = {}


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "leuktune" / "weights-sha256.json"


def _read_cache(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, entries: dict[str, str]) -> None:
    """Written aside and renamed, so a trial beside this one reads the old file or the new one;
    a cache that cannot be written (a read-only home) only costs the next process a hash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(entries, f)
        os.replace(f.name, path)
    except OSError:
        pass


def sha256_of(path: str | Path) -> str:
    """The file's sha256 (hex), hashed once per file and version of it on this machine.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".pth") as f:
    ...     _ = f.write(b"weights"); f.flush()
    ...     sha256_of(f.name)[:12]
    '9a129038d9a0'
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _remembered:
        return _remembered[key]
    cache = _cache_file()
    entries = _read_cache(cache)
    text_key = f"{key[0]}|{key[1]}|{key[2]}"
    digest = entries.get(text_key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest = h.hexdigest()
        _write_cache(cache, {**_read_cache(cache), text_key: digest})
    _remembered[key] = digest
    return digest


def of_file(path: str | Path) -> str:
    """A weights file as the leaderboard names it: ``DinoBloom-S.pth sha256:c2f7990b003e``."""
    return f"{Path(path).name} sha256:{sha256_of(path)[:DIGEST_CHARS]}"


def of_hub(pretrained_cfg: dict | None, name: str) -> str:
    """Weights timm took from the Hugging Face cache, by their Hub id (``hf-hub:<owner>/<model>``)."""
    if name.startswith("hf-hub:"):
        return name
    hub = (pretrained_cfg or {}).get("hf_hub_id")
    return f"hf-hub:{hub}" if hub else f"timm:{name}"
