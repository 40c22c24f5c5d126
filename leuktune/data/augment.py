"""Augmentation of whole batches already on the device: no per-image Python, no extra decode.

Every sample gets its own draw. Flips, rotation, zoom and shear are folded into one
affine map per sample and applied with a single ``grid_sample``; colour jitter is one
3x3 matrix and an offset per sample. Input and output are RGB in [0, 1], before the
backbone's normalisation, so the value range is the image's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from leuktune.config import AugmentConfig

# sqrt(1/3) (1, 1, 1): hue turns about the grey axis of RGB space.
_GREY = torch.full((3,), 1 / math.sqrt(3))

# The optical-density colour of each dye (rows: RGB absorbance, unit length), Ruifrok and
# Johnston's vectors, which scikit-image's separate_stains uses: the blue-purple nuclear dye
# (haematoxylin; in Romanowsky stains the azure/methylene blue of Giemsa, May-Grunwald, Wright)
# and eosin, with a third orthogonal vector for what neither explains.
_DYES = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_DYES = _DYES / _DYES.norm(dim=1, keepdim=True)


def augment_batch(x: torch.Tensor, augment: AugmentConfig, strength: float = 1.0) -> torch.Tensor:
    """``x`` (N, 3, H, W) in [0, 1] -> a new batch of the same shape, still in [0, 1]."""
    rotate = math.radians(augment.rotate * strength)
    zoom = min(augment.zoom * strength, 0.9)
    shear = math.radians(min(augment.shear * strength, 60.0))
    color = augment.color * strength
    stain = augment.stain * strength
    if rotate or zoom or shear:
        x = _affine(x, augment.flip, rotate, zoom, shear)
    elif augment.flip:
        x = _flip(x)
    if stain:
        x = _stain(x, stain)
    if color:
        x = _jitter(x, color)
    return x


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
