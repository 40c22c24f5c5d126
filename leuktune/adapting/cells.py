"""A lab's cells as adapting takes them, and the log of which cells each step saw.

Every step of an adaptation is handed ``Cells`` (decoded pixels with their files, and class ids
where they are labelled) and notes the files it was handed in a ``Seen`` log, which the adapted
model's ``cells.parquet`` keeps: so that it can be checked, file by file, that no cell the lab's
figures are measured on was used to fit or to choose anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from leuktune import uris


@dataclass(frozen=True)
class Cells:
    """Decoded uint8 pixels (N, H, W, 3), each cell's file, and its class id (``labels``; None:
    unlabelled) and group (a patient, or the image itself; None: each its own)."""

    pixels: np.ndarray
    paths: tuple[str, ...]
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray) -> Cells:
        rows = np.asarray(rows, dtype=np.int64)
        return Cells(self.pixels[rows], tuple(self.paths[r] for r in rows),
                     None if self.labels is None else self.labels[rows],
                     None if self.groups is None else self.groups[rows])

    def unlabelled(self) -> Cells:
        return Cells(self.pixels, self.paths)

    def __add__(self, other: Cells) -> Cells:
        """Both sets' pixels and files, unlabelled (what label-free steps read)."""
        if not len(other):
            return self.unlabelled()
        return Cells(np.concatenate([self.pixels, other.pixels]), self.paths + other.paths)

    def group_ids(self) -> np.ndarray:
        return np.arange(len(self)) if self.groups is None else self.groups


def no_cells(size: int) -> Cells:
    return Cells(np.zeros((0, size, size, 3), np.uint8), ())


@dataclass
class Seen:
    """step -> the files it was handed (to fit or to choose with)."""

    steps: dict[str, set[str]] = field(default_factory=dict)

    def saw(self, step: str, cells: Cells) -> None:
        self.steps.setdefault(step, set()).update(cells.paths)

    def of(self, path: str) -> list[str]:
        return sorted(step for step, paths in self.steps.items() if path in paths)


def digests(pixels: np.ndarray) -> list[str]:
    """A digest of each decoded image: one cell saved under two names is one cell."""
    return [hashlib.sha1(np.ascontiguousarray(p).tobytes()).hexdigest() for p in pixels]


def read_unlabelled(root: str, load_images: Callable, excluded: Cells, echo: Callable[[str], None]) -> Cells:
    """The images under ``root`` (any layout), decoded and resized as the model reads images, less
    any that is one of ``excluded`` (the lab's held-out cells: by file or by identical pixels), said
    in one line; an unreadable file is left out and named."""
    # the data layer imports Ray: reading a folder of files does not need it
    from leuktune.data.sources import images_under

    paths = images_under(root)
    held = {uris.identity(p) for p in excluded.paths}
    kept = [p for p in paths if uris.identity(p) not in held]
    pixels, table = load_images(kept)
    bad = table[table["error"].notna()]
    for row in bad.head(5).itertuples():
        echo(f"[leuktune] unlabelled {row.input} left out: {row.error}")
    readable = [p for p, error in zip(kept, table["error"]) if error is None or error != error]
    same = set(digests(excluded.pixels))
    keep = np.array([d not in same for d in digests(pixels)], dtype=bool)
    dropped = len(paths) - int(keep.sum()) - len(bad)
    if dropped:
        echo(f"[leuktune] {dropped} unlabelled image(s) under {root} are cells the lab's figures are measured on "
             "(the same file or the same pixels): left out")
    return Cells(pixels[keep], tuple(p for p, k in zip(readable, keep) if k))
