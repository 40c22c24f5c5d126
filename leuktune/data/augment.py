"""Augmentation of whole batches already on the device: no per-image Python, no extra decode.

Every sample gets its own draw. Flips, rotation, zoom and shear are folded into one
affine map per sample and applied with a single ``grid_sample``; colour jitter is one
3x3 matrix and an offset per sample. Input and output are RGB in [0, 1], before the
backbone's normalisation, so the value range is the image's own.

The levers of a model that must hold at other labs (``train.scale_augment``, ``train.blur``,
``train.grayscale``, ``train.color_strength``; ``augment_train``) are batched the same way: a
resize, a blur of a per-sample sigma and a grey mix, each skipped (no draw made) when off, so a
run without them sees the pixels it always did.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from leuktune.config import AugmentConfig, TrainConfig

# sqrt(1/3) (1, 1, 1): hue turns about the grey axis of RGB space.
_GREY = torch.full((3,), 1 / math.sqrt(3))

# The optical-density colour of each dye (rows: RGB absorbance, unit length), Ruifrok and
# Johnston's vectors, which scikit-image's separate_stains uses: the blue-purple nuclear dye
# (haematoxylin; in Romanowsky stains the azure/methylene blue of Giemsa, May-Grunwald, Wright)
# and eosin, with a third orthogonal vector for what neither explains.
_DYES = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_DYES = _DYES / _DYES.norm(dim=1, keepdim=True)


# ITU-R BT.601 luma: what a grey camera of a smear records.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def augment_train(x: torch.Tensor, train: TrainConfig) -> torch.Tensor:
    """A training batch augmented as ``train`` (a trial's concrete section) says."""
    return augment_batch(x, train.augment, train.augment_strength, color_strength=train.color_strength,
                         scale=train.scale_augment, grayscale=train.grayscale, blur=train.blur)


def augment_batch(x: torch.Tensor, augment: AugmentConfig, strength: float = 1.0, *, color_strength: float = 1.0,
                  scale: float = 1.0, grayscale: float = 0.0, blur: float = 0.0) -> torch.Tensor:
    """``x`` (N, 3, H, W) in [0, 1] -> a new batch of the same shape, still in [0, 1]: resized by
    up to ``scale`` either way, flipped and turned, blurred by a sigma up to ``blur``, restained and
    jittered (``color_strength`` x ``strength`` x augment's color and stain), made grey with
    probability ``grayscale`` (last: nothing after it gives the channels colour again)."""
    rotate = math.radians(augment.rotate * strength)
    zoom = min(augment.zoom * strength, 0.9)
    shear = math.radians(min(augment.shear * strength, 60.0))
    color = augment.color * strength * color_strength
    stain = augment.stain * strength * color_strength
    if scale > 1:
        x = _rescale(x, scale)
    if rotate or zoom or shear:
        x = _affine(x, augment.flip, rotate, zoom, shear)
    elif augment.flip:
        x = _flip(x)
    if blur:
        x = _blur(x, blur)
    if stain:
        x = _stain(x, stain)
    if color:
        x = _jitter(x, color)
    if grayscale:
        x = _grey(x, grayscale)
    return x


def _rescale(x: torch.Tensor, largest: float) -> torch.Tensor:
    """Each sample's content resized about the centre by a factor drawn log-uniformly in
    [1/largest, largest] (another microscope's magnification), cropped or padded back to its size;
    the padding is the image's mean colour (a smear's background, not a mirror of the cell)."""
    n, device = x.shape[0], x.device
    factor = torch.exp(_uniform(n, math.log(largest), device))
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor  # affine_grid maps output to input: larger divides
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean
            ).clamp_(0, 1)


def _blur(x: torch.Tensor, largest: float) -> torch.Tensor:
    """Each sample blurred by a Gaussian of its own sigma in [0, largest] pixels: one separable,
    grouped convolution for the whole batch (a sample's kernel for each of its channels)."""
    n, c, h, w = x.shape
    device = x.device
    radius = max(1, min(math.ceil(3 * largest), h - 1, w - 1))
    sigma = (torch.rand(n, device=device) * largest).clamp(min=1e-3)
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.dtype)  # (N*C, K)
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _grey(x: torch.Tensor, chance: float) -> torch.Tensor:
    """Each sample, with probability ``chance``, its luma in all three channels."""
    pick = torch.rand(x.shape[0], device=x.device) < chance
    luma = torch.einsum("c,nchw->nhw", _LUMA.to(device=x.device, dtype=x.dtype), x)[:, None].expand_as(x)
    return torch.where(pick[:, None, None, None], luma, x)


def _stain(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Each sample restained: the image separated into its dyes' concentrations (optical density,
    -log of the light passed, along the dye vectors), each dye's concentration scaled by a factor
    in [1 - amount, 1 + amount] and shifted by up to amount / 10, and recombined (Tellez et al.
    2018's stain jitter): another lab's dye batch and staining time, not a hue turn of the whole
    image."""
    n, device, dtype = x.shape[0], x.device, x.dtype
    dyes = _DYES.to(device=device, dtype=torch.float32)
    density = -torch.log(x.float().clamp(min=1 / 255))  # (N, 3, H, W)
    concentration = torch.einsum("dc,nchw->ndhw", torch.linalg.inv(dyes).T, density)
    scale = 1 + (torch.rand(n, 3, 1, 1, device=device) * 2 - 1) * amount
    shift = (torch.rand(n, 3, 1, 1, device=device) * 2 - 1) * amount / 10
    density = torch.einsum("dc,ndhw->nchw", dyes, concentration * scale + shift)
    return torch.exp(-density).clamp_(0, 1).to(dtype)


def _uniform(n: int, bound: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, device=device) * 2 - 1) * bound


def _flip(x: torch.Tensor) -> torch.Tensor:
    """Per-sample flips and transposition: the eight symmetries of the square, no resampling."""
    draw = torch.rand(x.shape[0], 3, device=x.device) < 0.5
    x = torch.where(draw[:, 0, None, None, None], x.flip(-1), x)
    x = torch.where(draw[:, 1, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(draw[:, 2, None, None, None], x.transpose(-1, -2), x)
    return x


def _affine(x: torch.Tensor, flip: bool, rotate: float, zoom: float, shear: float) -> torch.Tensor:
    n, device = x.shape[0], x.device
    angle = _uniform(n, rotate, device)
    scale = 1 + _uniform(n, zoom, device)
    skew = torch.tan(_uniform(n, shear, device))
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.stack([torch.stack([one, skew], -1), torch.stack([zero, one], -1)], -2)
    # affine_grid maps output to input coordinates, so zooming in (scale > 1) divides.
    matrix = rotation @ shearing / scale[:, None, None]
    if flip:
        signs = torch.where(torch.rand(n, 2, device=device) < 0.5, -1.0, 1.0)
        matrix = matrix * signs[:, None, :]
        swap = torch.rand(n, device=device) < 0.5  # a transposition swaps the columns
        matrix = torch.where(swap[:, None, None], matrix.flip(-1), matrix)
    theta = torch.cat([matrix, torch.zeros(n, 2, 1, device=device)], dim=2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Reflection fills the corners with more smear background rather than black,
    # which a classifier could learn as a sign of augmentation.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _jitter(x: torch.Tensor, color: float) -> torch.Tensor:
    """Brightness, contrast and hue per sample, as stain and illumination vary between slides."""
    n, device = x.shape[0], x.device
    brightness = 1 + _uniform(n, color, device)
    contrast = 1 + _uniform(n, color, device)
    hue = _uniform(n, color * math.pi, device)  # radians: up to color/2 of a full turn
    k = _GREY.to(device)
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=device, dtype=x.dtype) / math.sqrt(3)
    cos, sin = torch.cos(hue)[:, None, None], torch.sin(hue)[:, None, None]
    # Rodrigues: a rotation of RGB about the grey axis keeps grey grey and turns the hue.
    turn = cos * torch.eye(3, device=device) + sin * cross + (1 - cos) * torch.outer(k, k)
    x = torch.einsum("nij,njhw->nihw", turn.to(x.dtype), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast[:, None, None, None] + mean
    return (x * brightness[:, None, None, None]).clamp_(0, 1)
