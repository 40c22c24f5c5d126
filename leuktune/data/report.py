"""What ``python -m leuktune.data`` prints: the data as a search sees it, before any training.

Counts per class and split (and per site, class and split where there are several sites), the
classes a site lacks, groups that span sites, bad or left-out files, exact and near duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from leuktune import runfolder
from leuktune.data.sites import SITE

SHOWN = 20  # bad files a report lists by name; the rest are counted


@dataclass
class DataReport:
    """What a researcher should know about the data before trusting a result
    (what ``python -m leuktune.data`` prints; ``str(report)`` gives the same text)."""

    counts: pd.DataFrame  # images per class (rows) and split (columns)
    groups: int
    rejected: pd.DataFrame  # path, label, error
    duplicate_images: int  # images whose exact pixels occur more than once
    near_duplicates: pd.DataFrame  # path_a, split_a, path_b, split_b, distance
    straddling_groups: list[str] = field(default_factory=list)  # only possible in predefined splits
    joined_images: int = 0  # images that joined a near-duplicate's group before the split
    refused_groups: list[tuple[str, int]] = field(default_factory=list)  # joins that would have grown too big
    split: pd.DataFrame | None = None  # the usable files: path, label, group, site, split
    # Several sites: images per site and class (rows) and split (columns, and total)
    site_counts: pd.DataFrame | None = None
    missing_classes: dict[str, list[str]] = field(default_factory=dict)  # site -> classes it has no image of
    spanning_groups: pd.DataFrame | None = None  # group, sites, images: groups with images at two or more sites
    stored_in: str | None = None  # where its tables were written ("the run folder", a check's --out), None: nowhere

    @property
    def classes(self) -> list[str]:
        return list(self.counts.index)

    @property
    def images(self) -> int:
        return int(self.counts.values.sum())

    @property
    def sites(self) -> list[str]:
        """The sites, in their order (leuktune.data.sites.names)."""
        return [] if self.site_counts is None else list(dict.fromkeys(self.site_counts.index.get_level_values(SITE)))

    def lines(self) -> list[str]:
        out = [f"{self.images} images, {len(self.counts)} classes, {self.groups} groups", self.counts.to_string()]
        out += self._site_lines()
        if len(self.rejected):
            out.append(f"{len(self.rejected)} bad file(s) left out{self._listed_in(runfolder.REJECTED)}:")
            out += [f"  {r.path}: {r.error}" for r in self.rejected.sort_values("path").head(SHOWN).itertuples()]
            if len(self.rejected) > SHOWN:
                out.append(f"  ... and {len(self.rejected) - SHOWN} more")
        if self.duplicate_images:
            out.append(f"{self.duplicate_images} images are exact duplicates of another; each set kept in one split")
        if self.joined_images:
            out.append(f"{self.joined_images} images joined the group of a near-duplicate (the same field saved "
                       "twice), so each set is in one split")
        if self.refused_groups:
            out.append(f"{len(self.refused_groups)} near-duplicate group(s) would have grown past "
                       f"data.near_duplicate_max_group images and were left apart (look-alike cells chain), e.g. "
                       + ", ".join(f"{g} ({n} images)" for g, n in self.refused_groups[:3]))
        if self.straddling_groups:
            out.append(f"WARNING: the dataset's own split puts {len(self.straddling_groups)} group(s) in two "
                       f"splits, e.g. {self.straddling_groups[:3]}: its test scores are inflated")
        if len(self.near_duplicates):
            out.append(f"WARNING: {len(self.near_duplicates)} near-duplicate image pair(s) across splits"
                       f"{self._listed_in(runfolder.NEAR_DUPLICATES)}, e.g.:")
            out += [f"  {r.path_a} ({r.split_a}) ~ {r.path_b} ({r.split_b}), distance {r.distance}"
                    for r in self.near_duplicates.head(10).itertuples()]
        return out

    def _site_lines(self) -> list[str]:
        if len(self.sites) < 2:
            return []
        out = [f"per site ({len(self.sites)}: {', '.join(self.sites)}), class and split:", self.site_counts.to_string()]
        out += [f"site {s!r} has no images of {', '.join(c)} (it is scored on the classes it has)"
                for s, c in self.missing_classes.items()]
        if self.spanning_groups is not None and len(self.spanning_groups):
            out.append(f"{len(self.spanning_groups)} group(s) span sites (identical or near-duplicate images, or one "
                       f"patient at two labs){self._listed_in(runfolder.SPANNING_GROUPS)}, e.g.:")
            out += [f"  {r.group}: {r.images} images at {r.sites}" for r in self.spanning_groups.head(10).itertuples()]
        return out

    def _listed_in(self, table: str) -> str:
        """Where a table of the report is, named only when it was written."""
        return f" (listed in {table} in {self.stored_in})" if self.stored_in else ""

    def __str__(self) -> str:
        return "\n".join(self.lines())


