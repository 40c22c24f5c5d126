"""How a batch meets the device: uint8 pixels in, normalised float tensors out, AMP around the model.

The same recipe serves training, validation and checkpoint evaluation, so a model is
always scored on inputs prepared exactly as it was trained on.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from leuktune.config import TrainConfig

T = TypeVar("T")
U = TypeVar("U")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on this device; None = full fp32."""
    if precision != "auto":
        return _DTYPES[precision]
    if device.type != "cuda":
        return None  # CPU autocast is slower than fp32 for these convolutions
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def prefetched(load: Callable[[T], U], items: Iterable[T]) -> Iterator[U]:
    """``load(item)`` for each item in order, the next one loading in a thread while the caller
    uses the current one. Worth it when ``load`` releases the GIL (numpy copies, pinning)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for item in items:
            upcoming = pool.submit(load, item)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def precision_name(dtype: torch.dtype | None) -> str:
    """As train.precision spells it: bf16, fp16 or fp32."""
    return next(name for name, known in _DTYPES.items() if known == dtype)


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    mean: torch.Tensor  # (1, 3, 1, 1): the backbone's normalisation
    std: torch.Tensor
    amp: torch.dtype | None
    channels_last: bool

    @classmethod
    def create(cls, device: torch.device, mean, std, train: TrainConfig) -> "DeviceSetup":
        if device.type == "cuda":
            # Pick the fastest convolution kernels per input shape, once per shape and process;
            # batches keep one shape (see batch_bounds and predict) so this is paid once.
            torch.backends.cudnn.benchmark = True
        return cls(device,
                   torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                   torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                   amp_dtype(train.precision, device),
                   train.channels_last and device.type == "cuda")

    def host_batches(self, images: np.ndarray, batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """``images[rows]`` for each batch of rows, as uint8 host tensors. On a GPU the next batch
        is gathered and pinned in a thread while the device computes on this one; on the CPU
        that thread would only take cores from the model."""
        if self.device.type != "cuda":
            return (torch.from_numpy(images[rows]) for rows in batches)
        return prefetched(lambda rows: torch.from_numpy(images[rows]).pin_memory(), batches)

    def to_unit(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 on the host -> (N, 3, H, W) float in [0, 1] on the device. The
        uint8 crosses to the device, a quarter of the bytes of float."""
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    @property
    def name(self) -> str:
        """The device as the leaderboard shows it: the GPU's model, or cpu."""
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"

    @property
    def precision(self) -> str:
        return precision_name(self.amp)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model
