"""Class probabilities of a model on rows of the decoded images: what the trainer scores each
epoch and what a trained model is evaluated and predicts with."""

from __future__ import annotations

import numpy as np
import torch

from leuktune.training.device import BatchSource, DeviceSetup


def fixed_size_batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``rows`` in batches of exactly ``batch_size`` (the last one padded by repeating its
    final row), so the model sees one input shape and the GPU plans its kernels once."""
    batches = [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches[-1] = np.concatenate([batches[-1], np.repeat(batches[-1][-1:], batch_size - len(batches[-1]))])
    return batches


# Test-time augmentation: the image and its flips (a cell on a slide has no up or left).
FLIPS = ((), (-1,), (-2,), (-1, -2))


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, source: BatchSource, rows: np.ndarray, setup: DeviceSetup,
            batch_size: int, num_classes: int, tta: bool = False, prepare=None) -> np.ndarray:
    """Class probabilities (len(rows), num_classes) for the images of ``rows``, in that order;
    with ``tta``, averaged over the image and its flips. ``prepare`` turns a batch of the
    source into the model's input (default: images normalised as the backbone expects)."""
    model.eval()
    out = [torch.zeros((0, num_classes), device=setup.device)]
    views = FLIPS if tta else ((),)
    for x, _ in source(fixed_size_batches(rows, batch_size)):
        x = prepare(x) if prepare is not None else setup.model_input(setup.to_unit(x))
        probs = 0
        for dims in views:
            with setup.autocast():
                logits = model(x.flip(dims) if dims else x)
            probs = probs + torch.softmax(logits.float(), dim=1)
        out.append(probs / len(views))
    return torch.cat(out)[: len(rows)].cpu().numpy()  # one copy back: each .cpu() would wait for the GPU
