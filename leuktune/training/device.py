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


class BatchSource:
    """Batches of rows of the decoded images, with their labels, on the device.

    On a GPU with room for them, the images and labels live on the device: a batch is one
    gather there, with no host copy, no transfer and no thread competing for the interpreter.
    Otherwise (a large set, or the CPU) each batch is gathered on the host; on a GPU the next
    one is gathered and pinned in a thread while the device computes. A host copy to the GPU
    from unpinned memory would wait for the GPU to finish its queue, so nothing takes that path.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, resident: bool = False):
        self.images, self.labels, self.device = images, labels, device
        self.on_device = None
        if resident and device.type == "cuda":
            self.on_device = (torch.from_numpy(np.ascontiguousarray(images)).to(device),
                              torch.from_numpy(np.ascontiguousarray(labels)).to(device))

    @staticmethod
    def fits(images: np.ndarray, device: torch.device, gpu_share: float) -> bool:
        """Whether the images may live on the GPU: at most a quarter of this trial's share of its memory."""
        if device.type != "cuda":
            return False
        return images.nbytes <= 0.25 * gpu_share * torch.cuda.get_device_properties(device).total_memory

    def __call__(self, batches: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images (N, H, W, 3), int64 labels (N,)) for each batch of rows, in order."""
        if self.on_device is not None:
            images, labels = self.on_device
            # One transfer of the whole epoch's rows (pinned, so it does not wait for the GPU).
            flat = torch.from_numpy(np.concatenate(batches).astype(np.int64)).pin_memory().to(self.device,
                                                                                               non_blocking=True)
            for rows in flat.split([len(b) for b in batches]):
                yield images.index_select(0, rows), labels.index_select(0, rows)
            return
        if self.device.type != "cuda":
            for rows in batches:
                yield torch.from_numpy(self.images[rows]), torch.from_numpy(self.labels[rows])
            return

        def gather(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(self.images[rows]).pin_memory(), torch.from_numpy(self.labels[rows]).pin_memory()

        for x, y in prefetched(gather, batches):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


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
        # cuDNN's autotuning (torch.backends.cudnn.benchmark) is left off: measured on an H100
        # with resnet50 at 128 px, it made a trial's first 3 steps take 17 s instead of 1 s and
        # the steps after it no faster (27 vs 23 ms at batch 32, 27 vs 28 at batch 128).
        return cls(device,
                   torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                   torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                   amp_dtype(train.precision, device),
                   train.channels_last and device.type == "cuda")

    def to_unit(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 (on the device, or on the host to cross now: a quarter of the bytes
        of float) -> (N, 3, H, W) float in [0, 1] on the device."""
        return batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised as the backbone expects, in the memory format the model's weights use
        (augmentation returns plain NCHW; a mismatch would convert inside every convolution)."""
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    @property
    def name(self) -> str:
        """The device as the leaderboard shows it: the GPU's model, or cpu."""
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"

    @property
    def precision(self) -> str:
        return precision_name(self.amp)

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model
