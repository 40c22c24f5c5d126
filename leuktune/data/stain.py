"""Stain normalisation at decode: every image's colours moved to a reference image's stain
(``data.stain_normalize``: Macenko's stain-vector method or Reinhard's colour statistics, by
torchstain's numpy backend), once, before the decode-once cache. Romanowsky stains (Giemsa,
May-Grunwald, Wright) differ from lab to lab; normalising to one reference is what a model
trained on one lab then sees at every other.

torchstain is the well-kept implementation both methods come from (Macenko et al. 2009,
Reinhard et al. 2001; ported from StainTools and HistomicsTK); it is chosen over writing them
again. A fitted normaliser is a few numbers, sent to the decode tasks with the paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np

from leuktune.data.decode import BadImage, load_rgb, resize
from leuktune.data.sources import DataError


# What torchstain raises, or warns of, on an image with no stain to separate (a blank field): a
# division by zero or an empty slice warns, and the result is not a number.
_NO_STAIN = (np.linalg.LinAlgError, ValueError, IndexError, RuntimeWarning)


@contextlib.contextmanager
def _no_stain_is_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


@dataclass
class StainNormalizer:
    """``method`` (macenko, reinhard) fitted to ``pixels``, the reference image at the run's image
    size (what a checkpoint keeps, so a trained model normalises without the reference's file);
    ``source`` says where the reference came from, for messages."""

    method: str
    pixels: np.ndarray = field(repr=False)
    source: str
    _fitted: object = field(default=None, repr=False)
    digest: str = ""

    def __post_init__(self):
        self.pixels = np.ascontiguousarray(self.pixels, dtype=np.uint8)
        self.digest = hashlib.sha1(self.pixels.tobytes()).hexdigest()[:12]
        self._fitted = self._new()
        try:
            with _no_stain_is_an_error():
                self._fitted.fit(self.pixels)
        except _NO_STAIN as err:
            raise DataError(f"data.stain_reference {self.source}: {self.method} cannot fit its stain "
                            f"({type(err).__name__}: {err}); choose an image with stained cells in it") from None

    def _new(self):
        # torchstain only where a run normalises stains
        import torchstain

        if self.method == "macenko":
            return torchstain.normalizers.MacenkoNormalizer(backend="numpy")
        return torchstain.normalizers.ReinhardNormalizer(backend="numpy")

    @property
    def key(self) -> str:
        """What the decoded pixels depend on (the cache's key takes it)."""
        return f"{self.method}:{self.digest}"

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """One image (H, W, 3) uint8 in the reference's stain. An image the method cannot
        separate (no stained pixels: a blank field) is kept as it is."""
        try:
            with _no_stain_is_an_error():
                if self.method == "macenko":
                    out = self._fitted.normalize(I=pixels, stains=False)[0]
                else:
                    out = self._fitted.normalize(pixels)
        except _NO_STAIN:
            return pixels
        return np.ascontiguousarray(out, dtype=np.uint8)


def reference_pixels(data) -> np.ndarray:
    """``data.stain_reference`` read and resized as the run's images are."""
    try:
        image = load_rgb(data.stain_reference)
    except BadImage as err:
        raise DataError(f"data.stain_reference {data.stain_reference}: {err}") from None
    return resize(image, data.image_size, data.resize)


def from_config(data, method: str | None = None) -> StainNormalizer | None:
    """The run's normaliser (``data.stain_normalize``, or ``method`` where the search draws it,
    fitted to ``data.stain_reference``), or None."""
    method = data.stain_normalize if method is None else method
    if not isinstance(method, str):
        raise DataError(f"data.stain_normalize is searched ({method}): each trial's model normalises with the "
                        "method it drew; name one method here (a trial's configuration holds its own)")
    if method == "off":
        return None
    return StainNormalizer(method, reference_pixels(data), data.stain_reference)
