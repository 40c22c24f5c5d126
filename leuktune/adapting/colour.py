"""The colour step: the lab's colours moved to the home lab's.

Each channel's log intensity (the optical density of that channel, up to its sign) is matched in
mean and spread to the run's own training images: a stain or lamp that raises each channel to its
own gamma and scales it by its own gain (what differs most between labs' Romanowsky stains) is
undone exactly, and the map is two numbers a channel, kept in the adapted model and applied inside
its network (``leuktune.trained.adapted.ColourMap``), so an export carries it.
"""

from __future__ import annotations

import numpy as np

from leuktune.trained.adapted import DARKEST

# Images whose pixels the statistics read (evenly spaced): plenty for six numbers.
MOST_IMAGES = 256


def log_statistics(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each channel's log intensity over (up to MOST_IMAGES of) the images."""
    if not len(pixels):
        raise ValueError("no images to take colour statistics of")
    step = max(1, len(pixels) // MOST_IMAGES)
    unit = np.asarray(pixels[::step], dtype=np.float32).reshape(-1, 3) / 255
    logs = np.log(np.maximum(unit, DARKEST))
    return logs.mean(axis=0).tolist(), np.maximum(logs.std(axis=0), 1e-6).tolist()


def colour_map(lab: tuple[list[float], list[float]], home: tuple[list[float], list[float]]) -> dict[str, list[float]]:
    """Scale and shift of each channel's log intensity taking the lab's statistics to the home's.

    >>> colour_map(([-1.0, -1.0, -1.0], [0.5, 0.5, 0.5]), ([-0.5, -1.0, -2.0], [0.25, 0.5, 1.0]))
    {'scale': [0.5, 1.0, 2.0], 'shift': [0.0, 0.0, 0.0]}
    """
    (lab_mean, lab_std), (home_mean, home_std) = lab, home
    scale = [h / s for h, s in zip(home_std, lab_std)]
    return {"scale": scale, "shift": [hm - k * lm for hm, k, lm in zip(home_mean, scale, lab_mean)]}
