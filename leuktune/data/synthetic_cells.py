"""How the synthetic set's cells are drawn: one stained white cell among red cells on a plasma
background, with the morphology that tells the classes apart in real smears:

- ALL: lymphoblast, round nucleus filling most of the cell, fine chromatin, thin blue rim.
- AML: large myeloblast, oval nucleus with pale nucleoli, grey-blue cytoplasm, sometimes an Auer rod.
- CLL: small mature lymphocyte, dense dark nucleus with clumped chromatin.
- CML: granular myelocyte, eccentric kidney/band nucleus, pink cytoplasm full of dark granules.
- MM: oval plasma cell, eccentric round nucleus, deep blue cytoplasm, pale perinuclear halo.
- healthy: mostly neutrophils (3-5 small nuclear lobes joined by strands, pale granular
  cytoplasm), and one in three a normal small lymphocyte, which looks much like a CLL
  cell but for its finer chromatin and wider cytoplasm rim: the hard pairs of real smears.

Drawn on a ``Canvas`` at twice the image size; ``Look`` moves the classes' sizes and colours
towards a common cell as the set's difficulty grows. Every draw comes from the generator it is
given (leuktune.data.synthetic seeds it from the seed, the class and the index).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from leuktune.config import SYNTHETIC_CLASSES


class Canvas:
    """An RGB float canvas drawn on at 2x and shrunk, for smooth cell outlines."""

    def __init__(self, size: int, background: np.ndarray, rng: np.random.Generator):
        self.size = size
        # Low-frequency stain unevenness across the slide.
        blotches = rng.normal(0, 6, (6, 6, 3)).astype(np.float32)
        blotches = np.asarray(
            Image.fromarray(np.uint8(np.clip(blotches + 128, 0, 255))).resize((size, size), Image.BICUBIC),
            dtype=np.float32,
        ) - 128
        self.rgb = np.broadcast_to(background, (size, size, 3)).astype(np.float32) + blotches

    def mask(self, shape: str, points, width: int = 0):
        """The shape's coverage, cut to its bounding box (most shapes are small)."""
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        pad = width + 2
        x0, y0 = max(0, int(min(xs)) - pad), max(0, int(min(ys)) - pad)
        x1, y1 = min(self.size, int(max(xs)) + pad + 1), min(self.size, int(max(ys)) + pad + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        layer = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(layer)
        local = [(x - x0, y - y0) for x, y in points]
        if shape == "polygon":
            draw.polygon(local, fill=255)
        else:
            draw.line(local, fill=255, width=width)
        return (slice(y0, y1), slice(x0, x1)), np.asarray(layer, dtype=np.float32) / 255.0

    def paint(self, mask, colour, texture: np.ndarray | None = None, alpha: float = 1.0) -> None:
        if mask is None:
            return
        box, cover = mask
        colour = np.asarray(colour, dtype=np.float32)
        fill = colour if texture is None else colour + texture[box][..., None]
        a = alpha * cover[..., None]
        self.rgb[box] = self.rgb[box] * (1 - a) + fill * a

    def finish(self, out_size: int, rng: np.random.Generator, defocus: float = 1.0) -> Image.Image:
        img = Image.fromarray(np.uint8(np.clip(self.rgb, 0, 255)))
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.6, 1.6) * defocus * self.size / 192))
        img = img.resize((out_size, out_size), Image.LANCZOS)
        noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(2, 6), (out_size, out_size, 3))
        return Image.fromarray(np.uint8(np.clip(noisy, 0, 255)))


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 48, wobble=None):
    """Polygon points of a rotated ellipse; ``wobble`` (n radii factors) roughens the outline."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    k = 1.0 if wobble is None else wobble
    x, y = rx * np.cos(t) * k, ry * np.sin(t) * k
    ca, sa = math.cos(angle), math.sin(angle)
    return list(zip(cx + x * ca - y * sa, cy + x * sa + y * ca))


def jitter(rng, colour, amount=12):
    return np.asarray(colour, dtype=np.float32) + rng.normal(0, amount, 3)


def _wobble(rng, n=48, amount=0.04):
    # Smooth irregularity: a few low harmonics, so outlines look organic, not polygonal.
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    k = np.ones(n)
    for h in (2, 3, 5):
        k += rng.normal(0, amount) * np.cos(h * t + rng.uniform(0, 2 * math.pi))
    return k


def _speckle(rng, size, amount, grain):
    """Chromatin texture: noise with a grain size in pixels (fine vs clumped)."""
    small = max(2, size // grain)
    noise = rng.normal(0, 1, (small, small)).astype(np.float32)
    up = Image.fromarray(noise).resize((size, size), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) * amount


def red_cells(canvas: Canvas, rng, s: float) -> None:
    for _ in range(rng.integers(4, 10)):
        cx, cy = rng.uniform(-0.05, 1.05, 2) * s
        r = rng.uniform(0.08, 0.12) * s
        colour = jitter(rng, (215, 140, 150), 10)
        canvas.paint(canvas.mask("polygon", _ellipse(cx, cy, r, r * rng.uniform(0.85, 1), rng.uniform(0, 6.3))),
                     colour)
        # Central pallor of a biconcave disc.
        canvas.paint(canvas.mask("polygon", _ellipse(cx, cy, r * 0.45, r * 0.45, 0)), colour + 25, alpha=0.5)


class Look:
    """How far the classes' sizes and colours are drawn towards a common cell (difficulty), and
    the site's magnification."""

    RADIUS, CYTOPLASM = 0.24, (185, 180, 220)  # the common cell the classes move towards

    def __init__(self, difficulty: float, magnification: float = 1.0):
        self.pull = 0.6 * difficulty
        self.magnification = magnification

    def radius(self, r_frac: float) -> float:
        return (r_frac + (self.RADIUS - r_frac) * self.pull) * self.magnification

    def colour(self, colour) -> np.ndarray:
        colour = np.asarray(colour, dtype=np.float32)
        return colour + (np.asarray(self.CYTOPLASM, dtype=np.float32) - colour) * self.pull

    def shade(self, offset: float) -> float:
        """A class's nucleus darker or paler than the common one, by less as the pull grows."""
        return offset * (1 - self.pull)


def draw_white_cell(canvas: Canvas, label: str, rng, s: float, look: Look = Look(0.0)) -> None:
    cx, cy = s / 2 + rng.normal(0, 0.04 * s, 2)
    theta = rng.uniform(0, 2 * math.pi)
    scale = rng.uniform(0.82, 1.18)
    base_nucleus = jitter(rng, (105, 55, 145), 14)
    nucleus = lambda offset=0: base_nucleus + look.shade(offset)  # noqa: E731 - a class's nucleus shade
    ring = lambda r_frac: look.radius(r_frac) * s * scale  # noqa: E731 - radius as a fraction of the image
    tint = lambda colour, amount=12: jitter(rng, look.colour(colour), amount)  # noqa: E731 - cytoplasm

    def blob(x, y, rx, ry, angle, colour, texture=None, alpha=1.0, rough=0.04):
        m = canvas.mask("polygon", _ellipse(x, y, rx, ry, angle, n=48 if rx > 3 else 12,
                                            wobble=_wobble(rng, n=48 if rx > 3 else 12, amount=rough)))
        canvas.paint(m, colour, texture, alpha)

    def along(dist, angle):
        return cx + dist * math.cos(angle), cy + dist * math.sin(angle)

    size = canvas.size
    if label == "ALL":
        r = ring(0.23)
        blob(cx, cy, r, r * rng.uniform(0.9, 1), theta, tint((170, 190, 228)))
        nx, ny = along(r * 0.06, theta)
        blob(nx, ny, r * 0.86, r * 0.82, theta, nucleus(15), _speckle(rng, size, 7, 3))
    elif label == "AML":
        r = ring(0.33)
        blob(cx, cy, r, r * rng.uniform(0.85, 1), theta, tint((165, 172, 212)))
        nx, ny = along(r * 0.12, theta)
        rn = r * 0.68
        blob(nx, ny, rn, rn * 0.85, theta, nucleus(30), _speckle(rng, size, 6, 4))
        for _ in range(rng.integers(0, 4)):  # nucleoli are not always in the focal plane
            a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.5) * rn
            px, py = nx + d * math.cos(a), ny + d * math.sin(a)
            rr = rn * rng.uniform(0.1, 0.16)
            blob(px, py, rr, rr, 0, jitter(rng, (195, 175, 220), 6))
        if rng.random() < 0.3:  # Auer rod in the cytoplasm
            x0, y0 = along(-r * 0.75, theta + 0.3)
            x1, y1 = along(-r * 0.45, theta + 0.5)
            canvas.paint(canvas.mask("line", [(x0, y0), (x1, y1)], width=max(2, int(s / 90))), (190, 40, 80))
    elif label == "CLL":
        r = ring(0.16)
        blob(cx, cy, r, r, theta, tint((180, 200, 232)))
        clumps = _speckle(rng, size, 18, 10)
        blob(cx, cy, r * 0.86, r * 0.84, theta, nucleus(-40), clumps, rough=0.03)
    elif label == "CML":
        r = ring(0.29)
        blob(cx, cy, r, r * rng.uniform(0.9, 1), theta, tint((228, 188, 208)))
        for _ in range(rng.integers(60, 110)):  # dark primary/secondary granules
            a, d = rng.uniform(0, 2 * math.pi), r * math.sqrt(rng.uniform(0, 0.9))
            gx, gy = cx + d * math.cos(a), cy + d * math.sin(a)
            g = s * rng.uniform(0.006, 0.011)
            blob(gx, gy, g, g, 0, jitter(rng, (120, 55, 115), 10), rough=0)
        # Kidney/band nucleus: overlapping ellipses along an arc on one side of the cell.
        arc0 = theta + rng.uniform(-0.3, 0.3)
        for k in np.linspace(-0.9, 0.9, 5):
            bx, by = along(r * 0.38, arc0 + k)
            blob(bx, by, r * 0.26, r * 0.2, arc0 + k + math.pi / 2, nucleus(), _speckle(rng, size, 6, 5))
    elif label == "MM":
        r = ring(0.22)
        aspect = rng.uniform(1.3, 1.55)
        blob(cx, cy, r * aspect, r, theta, tint((75, 98, 172)))
        nx, ny = along(r * aspect * 0.45, theta)
        rn = r * 0.62
        hx, hy = along(r * aspect * 0.02, theta)
        blob(hx, hy, rn * 0.7, rn * 0.8, theta, jitter(rng, (205, 208, 235), 6), alpha=0.85)  # perinuclear halo
        blob(nx, ny, rn, rn * 0.95, theta, nucleus(-25))
        for k in range(rng.integers(6, 9)):  # clock-face chromatin
            a = 2 * math.pi * k / 8 + rng.normal(0, 0.2)
            px, py = nx + 0.55 * rn * math.cos(a), ny + 0.55 * rn * math.sin(a)
            blob(px, py, rn * 0.17, rn * 0.17, 0, nucleus(-60), rough=0)
    elif label == "healthy" and rng.random() < 1 / 3:  # normal small lymphocyte
        r = ring(0.18)
        blob(cx, cy, r, r * rng.uniform(0.9, 1), theta, tint((175, 198, 232)))
        nx, ny = along(r * 0.12, theta)
        blob(nx, ny, r * 0.74, r * 0.72, theta, nucleus(-30), _speckle(rng, size, 10, 4), rough=0.03)
    elif label == "healthy":
        r = ring(0.26)
        blob(cx, cy, r, r * rng.uniform(0.92, 1), theta, tint((230, 208, 218)),
             _speckle(rng, size, 5, 2))
        lobes = int(rng.integers(3, 6))
        centres = [along(r * 0.42, theta + 2 * math.pi * k / lobes * 0.75) for k in range(lobes)]
        for (ax, ay), (bx, by) in zip(centres, centres[1:]):  # thin chromatin strands
            canvas.paint(canvas.mask("line", [(ax, ay), (bx, by)], width=max(2, int(s / 100))), nucleus())
        for bx, by in centres:
            rl = r * rng.uniform(0.22, 0.3)
            blob(bx, by, rl, rl * 0.85, rng.uniform(0, 6.3), nucleus(-10), _speckle(rng, size, 8, 6))
    else:
        raise ValueError(f"unknown synthetic class {label!r}; expected one of {SYNTHETIC_CLASSES}")
