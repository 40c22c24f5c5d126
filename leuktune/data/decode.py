"""One image file -> RGB uint8 pixels at the experiment's size, or the reason it cannot be.

Microscopy exports come in every mode PIL knows; each is brought to 8-bit RGB the way
a viewer would show it (16-bit scaled, not clipped; transparency over white).
"""

from __future__ import annotations

import hashlib
import io
import typing

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from leuktune.config import ResizeMode
from leuktune.data.files import read_bytes
from leuktune.errors import LeuktuneError


class BadImage(LeuktuneError, ValueError):
    """A file that is not a readable image; the message says why."""


def load_rgb(path: str, where: str = "here") -> Image.Image:
    """An image file (a local path or a URI) as RGB pixels; ``BadImage`` says why it cannot be
    (``where``: the machine reading it, for that message)."""
    try:
        data = read_bytes(path)
    except OSError as err:  # not there on this machine, no permission, the bucket refused
        raise BadImage(f"cannot be read {where} ({type(err).__name__}: {err})") from None
    return rgb_of(data)


def rgb_of(data: bytes) -> Image.Image:
    """An image file's bytes as RGB pixels; ``BadImage`` says why they are not an image."""
    if not data:
        raise BadImage("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: truncated data fails here, not later in a trial
            return to_rgb(img)
    except UnidentifiedImageError:
        raise BadImage("not an image file PIL can identify") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's ways of saying corrupt/truncated
        raise BadImage(f"corrupt or truncated image: {err}") from None
    except Image.DecompressionBombError as err:  # a whole slide, not a smear field
        raise BadImage(f"too large to decode: {err}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit greyscale: scale the full range to 8 bits (convert() would clip to white).
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max()
        arr = arr / hi * 255 if hi > 0 else arr
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def resize(img: Image.Image, size: int, mode: str) -> np.ndarray:
    """Square ``size`` pixels. pad: whole image, aspect kept, borders in its mean colour;
    crop: centre crop, aspect kept; stretch: aspect changed."""
    if mode == "pad":
        fill = tuple(int(c) for c in np.asarray(img).reshape(-1, 3).mean(axis=0))
        out = ImageOps.pad(img, (size, size), method=Image.BILINEAR, color=fill)
    elif mode == "crop":
        out = ImageOps.fit(img, (size, size), method=Image.BILINEAR)
    elif mode == "stretch":
        out = img.resize((size, size), Image.BILINEAR)
    else:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {typing.get_args(ResizeMode)}")
    return np.asarray(out, dtype=np.uint8)


def examine(path: str, size: int, mode: str, where: str = "here",
            stain=None) -> tuple[np.ndarray | None, str | None, int | None, str | None]:
    """(pixels, content hash, perceptual hash, error): content hash of the decoded pixels finds
    exact duplicates whatever the file format; the perceptual hash finds near-duplicates. Both
    are of the file's own image; the pixels are in the reference's stain where ``stain`` (a
    ``leuktune.data.stain.StainNormalizer``) is given."""
    try:
        img = load_rgb(path, where)
    except BadImage as err:
        return None, None, None, str(err)
    content = hashlib.sha1(np.asarray(img).tobytes() + str(img.size).encode()).hexdigest()
    phash = int(str(imagehash.phash(img)), 16)
    pixels = resize(img, size, mode)
    return (stain(pixels) if stain is not None else pixels), content, phash, None
