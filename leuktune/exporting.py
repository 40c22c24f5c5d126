"""A trained model for use outside leuktune, ONNX or TorchScript (``Run.export``, ``python -m leuktune.export``).

The exported network takes float (N, 3, H, W) images normalised as ``preprocessing.json``
beside it says (size, resize mode, mean, std) and returns calibrated class probabilities
(softmax of the logits divided by the fitted temperature), in the order of its class names.
Every export is checked against PyTorch on real images of the run before it is kept.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from leuktune import runfolder
from leuktune.errors import LeuktuneError
from leuktune.runfolder import RunFolder

# data.stain_normalize's reference at the input size, beside the model: what the stain of an image
# is moved to before the scale (leuktune.data.stain; torchstain's macenko or reinhard)
STAIN_REFERENCE = "stain_reference.png"
TOLERANCE = 1e-4  # the largest difference of probabilities allowed between the export and PyTorch


class ExportError(LeuktuneError, ValueError):
    """An export that cannot be made (format, images to check it on) or that does not match PyTorch."""


class Calibrated(nn.Module):
    """The network with its temperature and softmax: what is exported."""

    def __init__(self, network: nn.Module, temperature: float):
        super().__init__()
        self.network = network
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x) / self.temperature, dim=-1)


class Averaged(nn.Module):
    """A composite as one network (the ensemble, a cross-validated trial's folds, an ensemble of
    those): each member's calibrated probabilities (its input renormalised from the composite's
    statistics, its first member's, to its own), averaged with the weights and rescaled by the
    composite's temperature."""

    def __init__(self, composite):
        super().__init__()
        first = composite.normalization
        members = composite.members
        self.members = nn.ModuleList(_calibrated(m) for m in members)
        self.register_buffer("weights", torch.tensor(composite.weights, dtype=torch.float32))
        self.register_buffer("temperature", torch.tensor(float(composite.temperature)))
        stats = [(torch.tensor(first["mean"]) - torch.tensor(m.normalization["mean"])) / torch.tensor(m.normalization["std"])
                 for m in members]
        scales = [torch.tensor(first["std"]) / torch.tensor(m.normalization["std"]) for m in members]
        self.register_buffer("shift", torch.stack(stats).view(len(stats), 1, 3, 1, 1))
        self.register_buffer("scale", torch.stack(scales).view(len(scales), 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        averaged = sum(w * member(x * self.scale[i] + self.shift[i])
                       for i, (w, member) in enumerate(zip(self.weights, self.members)))
        return torch.softmax(torch.log(averaged.clamp_min(1e-12)) / self.temperature, dim=-1)


def _calibrated(model) -> nn.Module:
    """A model's calibrated probabilities as one network: a trial's network with its temperature, or
    the average of a composite's members, each made the same way."""
    if model.members:
        return Averaged(model)
    return Calibrated(model.module.to("cpu").float(), model.temperature)


def _network(model) -> nn.Module:
    """What is exported: a trial's network calibrated, or the ensemble averaged."""
    return _calibrated(model).eval()


def _onnx(model: nn.Module, example: torch.Tensor, path: Path):
    # torch.export-based exporter, a dynamic batch; an example of batch 2, since a batch of one
    # can silently fix the batch size of an attention head's graph.
    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=18, input_names=["input"],
                      output_names=["probabilities"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                      external_data=False)
    # onnxruntime only for an ONNX export
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x.numpy()})[0]


def _torchscript(model: nn.Module, example: torch.Tensor, path: Path):
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export; it still runs
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, (example,)), str(path))
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(x).detach().numpy()


FORMATS = {"onnx": ("model.onnx", _onnx), "torchscript": ("model.pt", _torchscript)}


def export(model, out: str | Path, fmt: str = "onnx", images: list[str] | None = None) -> Path:
    """Write ``model`` (any trained model: a trial's network, a cross-validated trial's folds, the
    ensemble of ``load_model(run, trial="ensemble")``) as ``fmt`` and its ``preprocessing.json`` into
    ``out``, checked on ``images`` (paths; default: the run's test images). Returns the model file."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name, write = FORMATS[fmt]
    network = _network(model)
    pixels = model.load_images(images)[0] if images else _test_pixels(model)
    x = model.model_input(pixels[:8]).cpu() if len(pixels) else None
    if x is None or len(x) < 2:
        raise ExportError("an export is checked on at least 2 readable images")
    with torch.no_grad():
        expected = network(x).numpy()
    run = write(network, x[:2], out / name)
    network.eval()  # exporters may leave modules in training mode
    difference = float(np.abs(run(x) - expected).max())
    if not difference < TOLERANCE:
        raise ExportError(f"the {fmt} export differs from PyTorch by {difference:.2e} (allowed {TOLERANCE:g})")
    data = model.config.data
    stain = model.stain_normalizer
    if stain is not None:  # what the method is fitted to, at the input's size: the export needs no other file
        Image.fromarray(stain.pixels).save(out / STAIN_REFERENCE)
    (out / "preprocessing.json").write_text(json.dumps({
        "format": fmt, "file": name, "input": {"name": "input", "layout": "NCHW", "dtype": "float32",
                                               "size": data.image_size, "resize": data.resize,
                                               "scale": "pixel / 255", "mean": list(model.normalization["mean"]),
                                               "std": list(model.normalization["std"]),
                                               # applied to the resized image before the scale (leuktune.data.stain)
                                               "stain_normalize": data.stain_normalize,
                                               "stain_reference": STAIN_REFERENCE if stain else None},
        "output": {"name": "probabilities", "classes": list(model.classes),
                   "meaning": "softmax(log(sum of weight x each member's softmax(logits / its temperature)) / "
                   "temperature), each member made the same way" if model.members else "softmax(logits / temperature)"},
        "temperature": model.temperature, "checked_on_images": int(len(x)), "max_difference": difference,
        # what was exported: its kind, temperature and where it was read from, each member's too
        "model": model.describe()}, indent=2))
    return out / name


def default_out(folder: RunFolder, trial_id: str) -> str:
    """Where an export goes unless told: the run's ``export/<trial>`` (a run in a bucket: ``./export-<trial>``)."""
    return f"{folder.path}/{runfolder.EXPORT}/{trial_id}" if folder.local else f"export-{trial_id}"


def _test_pixels(model, count: int = 8) -> np.ndarray:
    """The first test images of the run that holds the model, as its data is read back where the run is now."""
    data = model.data()
    return data.pixels()[data.indices("test")[:count]]

