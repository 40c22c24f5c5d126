"""A procedural blood-smear set, so leuktune runs end to end with no data to download.

Each image is one stained white cell among red cells on a plasma background, drawn with the
morphology that tells the classes apart in real smears (leuktune.data.synthetic_cells).

Size, position, rotation, stain colour, blur and noise vary per image, so the task is
learnable but not trivial. ``difficulty`` (0 to 1; 0 is the set as it always was, pixel for
pixel) makes it harder the ways real sets are hard, so that searchers, schedules and recipes
can be told apart on it: the classes' sizes and colours move towards each other (finer
differences), each image gets its own stain (per-channel gamma and gain) and focus (up to three
times the blur), and a share of the images (a tenth at difficulty 1) are drawn as another
class than their folder says (label noise, as between two readers of one smear). ``site`` 1 to 3
are other labs, each its own stain, magnification and focus (``SITES``: external test sets, or
the labs of data.sites).

Images are written as real PNG files in class folders, the same path a real dataset takes.
Every image depends only on (seed, class, index) and the options above.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from leuktune.config import SYNTHETIC_CLASSES
from leuktune.config.data import SYNTHETIC_SITES
from leuktune.data.synthetic_cells import Canvas, Look, draw_white_cell, jitter, red_cells

_MARKER = ".leuktune-synthetic.json"


def _restain(img: Image.Image, rng: np.random.Generator, difficulty: float) -> Image.Image:
    """This image's own stain: a gamma and a gain per channel (another batch of dye, another lamp)."""
    gamma = np.exp(rng.normal(0, 0.25 * difficulty, 3))
    gain = 1 + rng.normal(0, 0.08 * difficulty, 3)
    return _toned(img, gamma, gain)


LABEL_NOISE = 0.1  # the share of images drawn as another class, at difficulty 1

# The labs (site 0 is the home lab, as the set always was): each its own stain (per-channel gamma
# and gain), magnification (how wide the cells are in the field) and focus (blur, times the home
# lab's). 1: a bluer, darker Giemsa at a higher magnification; 2: a paler, pinker stain at a lower
# one, slightly out of focus; 3: a greyish, darker stain, larger cells, a softer lens.
SITES = {0: {"gamma": (1.0, 1.0, 1.0), "gain": (1.0, 1.0, 1.0), "magnification": 1.0, "blur": 1.0},
         1: {"gamma": (1.25, 1.1, 0.85), "gain": (0.92, 0.9, 1.0), "magnification": 1.25, "blur": 1.0},
         2: {"gamma": (0.8, 0.95, 1.05), "gain": (1.0, 0.96, 0.94), "magnification": 0.8, "blur": 1.4},
         3: {"gamma": (1.1, 1.15, 1.15), "gain": (0.9, 0.92, 0.95), "magnification": 1.4, "blur": 1.8}}
assert len(SITES) == SYNTHETIC_SITES, "config.data.SYNTHETIC_SITES bounds data.synthetic.site"


def _site_stain(img: Image.Image, site: int) -> Image.Image:
    return _toned(img, np.asarray(SITES[site]["gamma"]), np.asarray(SITES[site]["gain"]))


def _toned(img: Image.Image, gamma: np.ndarray, gain: np.ndarray) -> Image.Image:
    """Each channel raised to its gamma and scaled by its gain (how a stain and a lamp colour an image)."""
    rgb = np.asarray(img, dtype=np.float32) / 255
    return Image.fromarray(np.uint8(np.clip(255 * gain * rgb ** gamma, 0, 255)))


def drawn_as(label: str, seed: int, index: int, difficulty: float = 0.0, classes=SYNTHETIC_CLASSES) -> str:
    """The class image ``index`` of folder ``label`` shows: its label but for the label noise."""
    if difficulty <= 0:
        return label
    rng = np.random.default_rng([seed, SYNTHETIC_CLASSES.index(label), index, 1])
    others = [c for c in classes if c != label]
    return str(rng.choice(others)) if others and rng.random() < LABEL_NOISE * difficulty else label


def render(label: str, seed: int, index: int, size: int, difficulty: float = 0.0,
           shows: str | None = None, site: int = 0) -> Image.Image:
    """One synthetic cell image; the same arguments give the same pixels (difficulty 0, site 0:
    as before either existed). ``shows``: the class drawn, when label noise says another;
    ``site``: another lab's stain, magnification and focus (``SITES``)."""
    rng = np.random.default_rng([seed, SYNTHETIC_CLASSES.index(label), index])
    # The difficulty's draws come from their own stream, so difficulty 0 leaves every other draw as it was.
    hard = np.random.default_rng([seed, SYNTHETIC_CLASSES.index(label), index, 2])
    s = 2 * size
    canvas = Canvas(s, jitter(rng, (238, 222, 226), 8), rng)
    red_cells(canvas, rng, s)
    draw_white_cell(canvas, shows or label, rng, s, Look(difficulty, SITES[site]["magnification"]))
    img = canvas.finish(size, rng, defocus=(1 + hard.uniform(0, 2 * difficulty)) * SITES[site]["blur"])
    img = _restain(img, hard, difficulty) if difficulty > 0 else img
    return _site_stain(img, site) if site else img


def generate(root: str | Path, classes=SYNTHETIC_CLASSES, images_per_class: int = 150,
             image_size: int = 96, seed: int = 0, difficulty: float = 0.0, site: int = 0) -> Path:
    """Write the set as ``root/<class>/<class>_<index>.png``; reuse it when already complete."""
    root = Path(root)
    params = {"classes": list(classes), "images_per_class": images_per_class,
              "image_size": image_size, "seed": seed, "difficulty": difficulty, "site": site, "version": 2}
    marker = root / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    for label in classes:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            shows = drawn_as(label, seed, i, difficulty, classes)
            render(label, seed, i, image_size, difficulty, shows, site).save(folder / f"{label}_{i:04d}.png")
    marker.write_text(json.dumps(params))
    return root


def default_root(datasets: Path, params: dict) -> Path:
    """Where the synthetic set lives when data.root is not given: keyed by its parameters."""
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return Path(datasets) / f"synthetic-{key}"
