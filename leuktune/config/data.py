"""The ``data`` section: where the images are, how they are read, resized and split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from leuktune.config.distributions import Strict, representatives, searchable
from leuktune.uris import is_uri

SYNTHETIC_CLASSES = ("ALL", "AML", "CLL", "CML", "MM", "healthy")


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
    # 0: the home lab; 1: another lab's stain and magnification, as an external test set (with
    # another seed: python -m leuktune.evaluate RUN --external <its folder>).
    site: Literal[0, 1] = 0


ResizeMode = Literal["pad", "crop", "stretch"]


def _off_forms(raw):
    # YAML reads a bare off as false; the issue tracker and papers say none
    return "off" if raw is False or raw is None or raw == "none" else raw


StainMethod = Annotated[Literal["off", "macenko", "reinhard"], BeforeValidator(_off_forms)]


class DataConfig(Strict):
    source: Literal["imagefolder", "cnmc", "allidb", "csv", "synthetic"] = "synthetic"
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

    @model_validator(mode="after")
    def _root_when_needed(self) -> "DataConfig":
        if self.source != "synthetic" and self.root is None:
            raise ValueError(f"data.root is required for source {self.source!r}")
        methods = [m for m in representatives(self.stain_normalize) if m != "off"]
        if methods and not self.stain_reference:
            raise ValueError(f"stain_normalize {methods[0]} needs data.stain_reference: an image whose "
                             "stain the others take (a typical smear of the training set)")
        if self.source == "synthetic" and self.root is not None and is_uri(self.root):
            raise ValueError(f"data.root {self.root!r}: the synthetic set is written to a local folder, not a bucket")
        return self
