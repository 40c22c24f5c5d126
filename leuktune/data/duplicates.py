"""Identical and near-identical images: the leak that puts one smear in two splits.

Identical pixels (under any name or format) join one group before the split; near-duplicates
(perceptual-hash distance within a bound) that land in different splits are reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leuktune.data.split import SPLITS


def merge_identical(manifest: pd.DataFrame, content_hash: pd.Series) -> pd.DataFrame:
    """Join groups that share an image with identical pixels (union-find), so exact
    duplicates, even under other names or formats, never straddle splits."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group, digest in zip(manifest["group"], content_hash):
        a, b = find(group), find(f"sha1:{digest}")
        if a != b:
            parent[b] = a
    out = manifest.copy()
    out["group"] = [find(g) for g in manifest["group"]]
    return out


def near_duplicates(split: pd.DataFrame, phash_hex: pd.Series, content_hash: pd.Series,
                    distance: int) -> pd.DataFrame:
    """Pairs of different images in different splits whose perceptual hashes differ in at
    most ``distance`` of 64 bits (vectorised Hamming distance, chunked to bound memory)."""
    columns = ["path_a", "split_a", "path_b", "split_b", "distance"]
    if distance <= 0 or len(split) < 2:
        return pd.DataFrame(columns=columns)
    hashes = np.array([int(h, 16) for h in phash_hex], dtype=np.uint64)
    which = split["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy()
    digests = content_hash.to_numpy()
    paths = split["path"].to_numpy()
    rows = []
    for start in range(0, len(hashes), 512):
        block = slice(start, start + 512)
        dist = np.bitwise_count(hashes[block, None] ^ hashes[None, :])
        i, j = np.nonzero(dist <= distance)
        i = i + start
        keep = (j > i) & (which[i] != which[j]) & (digests[i] != digests[j])
        for a, b in zip(i[keep], j[keep]):
            rows.append((paths[a], SPLITS[which[a]], paths[b], SPLITS[which[b]], int(dist[a - start, b])))
    return pd.DataFrame(rows, columns=columns)


def straddling_groups(manifest: pd.DataFrame, content_hash: pd.Series) -> list[str]:
    """Groups (identical images joined) that a dataset's own split puts in two splits."""
    per_group = manifest.assign(g=merge_identical(manifest, content_hash)["group"]).groupby("g")["split"]
    return sorted(per_group.nunique().loc[lambda n: n > 1].index)
