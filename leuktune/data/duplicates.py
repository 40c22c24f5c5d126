"""Identical and near-identical images: the leak that puts one smear in two splits.

Identical pixels (under any name or format) join one group before the split, and so, by
default, do near-duplicates (the same field saved twice, shifted or re-encoded: perceptual-hash
distance within a bound). Look-alike single-cell crops can chain into one huge group, so a join
that would grow a group past a few images is refused and reported. Near-duplicates that still
land in different splits (a dataset's own split, a refused join) are reported with their paths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class _Groups:
    """Union-find over group names, knowing each group's size in images."""

    def __init__(self, groups: pd.Series):
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = groups.value_counts().to_dict()

    def find(self, x: str) -> str:
        while self.parent.setdefault(x, x) != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: str, b: str) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.size[a] = self.size.get(a, 0) + self.size.pop(b, 0)


def merge_identical(manifest: pd.DataFrame, content_hash: pd.Series) -> pd.DataFrame:
    """Join groups that share an image with identical pixels (union-find), so exact
    duplicates, even under other names or formats, never straddle splits."""
    groups = _Groups(manifest["group"])
    for group, digest in zip(manifest["group"], content_hash):
        groups.join(group, f"sha1:{digest}")
    return manifest.assign(group=[groups.find(g) for g in manifest["group"]])


def close_pairs(phash_hex: pd.Series, distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for images i < j (rows of the manifest) whose perceptual hashes differ in
    at most ``distance`` of 64 bits, closest first (vectorised Hamming distance, chunked to bound
    memory); none when ``distance`` is 0. Computed once per data preparation: the grouping and the
    report read the same pairs."""
    if distance <= 0:
        return []
    hashes = np.array([int(h, 16) for h in phash_hex], dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), 512):
        dist = np.bitwise_count(hashes[start:start + 512, None] ^ hashes[None, :])
        i, j = np.nonzero(dist <= distance)
        keep = j > i + start
        pairs += [(int(a) + start, int(b), int(dist[a, b])) for a, b in zip(i[keep], j[keep])]
    return sorted(pairs, key=lambda pair: pair[2])


def join_near_duplicates(manifest: pd.DataFrame, pairs: list[tuple[int, int, int]],
                         max_group: int) -> tuple[pd.DataFrame, int, list[tuple[str, int]]]:
    """Join the groups of near-duplicate images (``close_pairs``), closest pairs first, unless the
    joined group would hold more than ``max_group`` images. Returns the manifest with the joined
    groups, how many images changed group, and the joins refused (a group and the size it would
    have reached)."""
    if not pairs:
        return manifest, 0, []
    names = manifest["group"].to_numpy()
    groups = _Groups(manifest["group"])
    refused: dict[str, int] = {}
    for i, j, _ in pairs:
        a, b = groups.find(names[i]), groups.find(names[j])
        if a == b:
            continue
        if groups.size[a] + groups.size[b] > max_group:
            refused[a] = max(refused.get(a, 0), groups.size[a] + groups.size[b])
            continue
        groups.join(a, b)
    joined = manifest.assign(group=[groups.find(g) for g in names])
    moved = int((joined.groupby("group")["group"].transform("size") > manifest.groupby("group")["group"]
                 .transform("size")).sum())
    return joined, moved, sorted(refused.items(), key=lambda item: -item[1])


def near_duplicates(split: pd.DataFrame, pairs: list[tuple[int, int, int]], content_hash: pd.Series) -> pd.DataFrame:
    """The near-duplicate ``pairs`` (``close_pairs``) of different images in different splits."""
    columns = ["path_a", "split_a", "path_b", "split_b", "distance"]
    if not pairs:
        return pd.DataFrame(columns=columns)
    which, digests, paths = split["split"].to_numpy(), content_hash.to_numpy(), split["path"].to_numpy()
    rows = [(paths[i], which[i], paths[j], which[j], d) for i, j, d in pairs
            if which[i] != which[j] and digests[i] != digests[j]]
    return pd.DataFrame(rows, columns=columns).sort_values(["path_a", "path_b"], ignore_index=True)


def straddling_groups(manifest: pd.DataFrame, content_hash: pd.Series) -> list[str]:
    """Groups (identical images joined) that a dataset's own split puts in two splits."""
    per_group = manifest.assign(g=merge_identical(manifest, content_hash)["group"]).groupby("g")["split"]
    return sorted(per_group.nunique().loc[lambda n: n > 1].index)
