"""The ``data`` section: where the images are, how they are read, resized and split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, field_validator, model_validator

from leuktune.config.distributions import Strict, representatives, searchable
from leuktune.uris import is_uri

SYNTHETIC_CLASSES = ("ALL", "AML", "CLL", "CML", "MM", "healthy")
SYNTHETIC_SITES = 4  # the built-in set's labs (leuktune.data.synthetic.SITES has one row each)
SOURCES = ("imagefolder", "cnmc", "allidb", "csv", "synthetic")


class SplitConfig(Strict):
    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        return self


class SyntheticConfig(Strict):
    """The built-in procedural blood-smear set (see leuktune.data.synthetic)."""

    classes: list[Literal[SYNTHETIC_CLASSES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(SYNTHETIC_CLASSES), min_length=2)
    images_per_class: int = Field(150, ge=5)
    image_size: int = Field(96, ge=32, le=1024)
    seed: int = 0
    # 0: the set as it always was. Up to 1: finer differences between the classes, each image
    # its own stain and focus, and label noise (a tenth of the images at 1): hard enough that
    # searchers, schedules and recipes can be told apart (python -m leuktune.bench searchers).
    difficulty: float = Field(0.0, ge=0, le=1)
    # 0: the home lab; 1 to 3: other labs, each its own stain, magnification and focus
    # (leuktune.data.synthetic.SITES), as an external test set (with another seed: python -m
    # leuktune.evaluate RUN --external <its folder>) or as one of data.sites.
    site: int = Field(0, ge=0, lt=SYNTHETIC_SITES)


class SiteConfig(Strict):
    """One lab of ``data.sites``: a source of its own, read as the top-level source/root would be."""

    source: Literal[SOURCES] = "imagefolder"  # type: ignore[valid-type]
    root: Optional[str] = None  # as data.root: a folder, a bucket prefix, a CSV/Parquet manifest
    # source synthetic: data.synthetic with these keys changed (e.g. {site: 2, seed: 7})
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _root_when_needed(self) -> "SiteConfig":
        if self.source != "synthetic" and self.root is None:
            raise ValueError(f"root is required for source {self.source!r}")
        if self.source == "synthetic" and self.root is not None and is_uri(self.root):
            raise ValueError(f"root {self.root!r}: the synthetic set is written to a local folder, not a bucket")
        return self


ResizeMode = Literal["pad", "crop", "stretch"]


def _off_forms(raw):
    # YAML reads a bare off as false; the issue tracker and papers say none
    return "off" if raw is False or raw is None or raw == "none" else raw


StainMethod = Annotated[Literal["off", "macenko", "reinhard"], BeforeValidator(_off_forms)]


class DataConfig(Strict):
    # "sites" (set for you) when data.sites lists the labs instead
    source: Literal[(*SOURCES, "sites")] = "synthetic"  # type: ignore[valid-type]
    # The dataset's folder (csv: the manifest file): a folder of the machine that runs the search
    # (read there), a folder every node mounts (NFS), or a bucket, s3://bucket/prefix or
    # gs://bucket/prefix (read by every node; the forms storage.path takes). synthetic: the local
    # folder it is written to (default: under storage).
    root: Optional[str] = None
    image_size: int = Field(64, ge=16, le=1024)
    # pad keeps the whole cell (aspect kept, borders in the image's mean colour);
    # crop takes the centre square; stretch changes the aspect.
    resize: ResizeMode = "pad"
    # Near-duplicates (perceptual-hash distance in bits of 64, at most near_duplicate_distance):
    # group joins them into one group before the split, as identical images are; report only
    # lists those that land in different splits; off skips the check.
    near_duplicates: Literal["group", "report", "off"] = "group"
    near_duplicate_distance: int = Field(4, ge=0, le=32)
    # A join that would grow a group past this many images is refused and reported.
    near_duplicate_max_group: int = Field(8, ge=2)
    split: SplitConfig = SplitConfig()
    on_bad_image: Literal["error", "skip"] = "error"
    # Where decoded images (and the built-in set) are kept on each machine's own disk; default:
    # <storage.path>/cache for local storage, ~/.cache/leuktune for a bucket.
    cache_dir: Optional[Path] = None
    # Every image's colours moved to the stain of one reference image, once, at decode: macenko
    # (stain vectors) or reinhard (colour statistics), by torchstain; off keeps them as they are.
    # The trained model normalises what it predicts on the same way (leuktune.data.stain).
    # Searchable, e.g. {choice: [off, reinhard, macenko]} (none is off): the images are decoded once
    # per method the search can draw (each kept in the decode-once cache), and each trial trains,
    # is scored and predicts with the method it drew (its leaderboard column stain_normalize).
    stain_normalize: searchable(StainMethod, "choice") = "off"
    stain_reference: Optional[str] = None  # an image file (local or a URI): a typical smear of the training set
    synthetic: SyntheticConfig = SyntheticConfig()
    # Several labs in one experiment, by name, each a source of its own ({source, root[, synthetic]}),
    # instead of data.source/root; every image's site is its lab's name (leuktune.data.sites). With
    # one source, the one site is named after data.root's last part ("synthetic" for the built-in set).
    sites: Optional[dict[str, SiteConfig]] = None
    # One set of class names over every lab: class -> the folder names (labels) that mean it, matched
    # case-insensitively (a class's own name always matches). None: the labels as the sources say.
    classes: Optional[dict[str, list[str]]] = None
    # A label data.classes maps to no class: error (a DataError naming the site, the label and the
    # classes) or skip (its images left out and listed in rejected.parquet with the reason).
    unmapped: Literal["error", "skip"] = "error"
    # These sites are the test split, whole; the others are split into train/val by data.split's
    # train and val shares (renormalised). A group (patient, identical or near-duplicate images)
    # with images at a test site goes to the test split whole. Empty: each site is split as one
    # set is, stratified by site and class.
    test_sites: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _sites_instead_of_source(cls, raw: Any) -> Any:
        """data.sites replaces data.source/root (source reads "sites"); a synthetic site's settings
        are data.synthetic's with the site's own keys changed."""
        if not isinstance(raw, dict) or not raw.get("sites"):
            return raw
        if raw.get("source", "sites") != "sites" or raw.get("root") is not None:
            raise ValueError(f"data.sites ({', '.join(map(str, raw['sites']))}) replaces data.source and data.root: "
                             "give each site its source and root, and drop the top-level ones")
        shared = raw.get("synthetic") or {}
        shared = shared.model_dump() if isinstance(shared, SyntheticConfig) else dict(shared)
        sites = {}
        for name, site in raw["sites"].items():
            if isinstance(site, dict) and site.get("source") == "synthetic" and isinstance(site.get("synthetic", {}), dict):
                site = {**site, "synthetic": {**shared, **(site.get("synthetic") or {})}}
            sites[name] = site
        return {**raw, "source": "sites", "sites": sites}

    @field_validator("classes")
    @classmethod
    def _one_class_per_name(cls, classes):
        """A label meaning two classes is refused by name (matching is case-insensitive)."""
        meaning: dict[str, str] = {}
        for name, labels in (classes or {}).items():
            for label in {name.casefold(), *(str(x).casefold() for x in labels)}:
                if meaning.setdefault(label, name) != name:
                    raise ValueError(f"label {label!r} is listed for both {meaning[label]!r} and {name!r}")
        return classes

    @model_validator(mode="after")
    def _root_when_needed(self) -> "DataConfig":
        if self.source == "sites" and not self.sites:
            raise ValueError("data.source sites needs data.sites: the labs by name, each {source, root}")
        unknown = sorted(set(self.test_sites) - set(self.sites or {}))
        if unknown and self.sites:
            raise ValueError(f"data.test_sites: {', '.join(unknown)} not among data.sites "
                             f"(known: {', '.join(self.sites)})")
        if self.sites and self.test_sites and set(self.test_sites) >= set(self.sites):
            raise ValueError(f"data.test_sites names every site ({', '.join(self.sites)}): keep one to train on")
        if self.source not in ("synthetic", "sites") and self.root is None:
            raise ValueError(f"data.root is required for source {self.source!r}")
        methods = [m for m in representatives(self.stain_normalize) if m != "off"]
        if methods and not self.stain_reference:
            raise ValueError(f"stain_normalize {methods[0]} needs data.stain_reference: an image whose "
                             "stain the others take (a typical smear of the training set)")
        if self.source == "synthetic" and self.root is not None and is_uri(self.root):
            raise ValueError(f"data.root {self.root!r}: the synthetic set is written to a local folder, not a bucket")
        return self
