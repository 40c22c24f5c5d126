"""What adapting a trial costs: a network of the asked backbone (random weights: the cost does not
depend on them) adapted with ``per_class`` labelled cells of each class of the built-in set's second
site, with the default steps (chosen by cross-validation, and applied as asked) and each tuning step
alone, timed on this machine's CPU threads. No run, no Ray: the network is built as a trial's
checkpoint would give it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from leuktune.adapting import Cells, Lab, Plan, adapt
from leuktune.adapting.cells import no_cells
from leuktune.adapting.colour import colour_map, log_statistics
from leuktune.config import SYNTHETIC_CLASSES, load
from leuktune.data import synthetic
from leuktune.data.decode import load_rgb, resize
from leuktune.models.classifier import build_model
from leuktune.trained import TrainedModel


def _network(backbone: str, image_size: int, classes: tuple[str, ...]) -> TrainedModel:
    cfg = load(None, [f"model.backbone={backbone}", "model.pretrained=false", f"data.image_size={image_size}",
                      "model.head=linear", "model.unfreeze_depth=all"])
    cfg = cfg.with_params(cfg.starts()[0])
    module = build_model(cfg.model, len(classes), image_size).eval()
    mean, std = module.backbone.mean, module.backbone.std
    state = {"class_names": list(classes), "epoch": 1, "normalization": {"mean": mean, "std": std}}
    return TrainedModel(module, state, cfg, torch.device("cpu"), f"<{backbone} with random weights>")


def _cells(root: Path, classes: tuple[str, ...], per_class: int, image_size: int) -> Cells:
    pixels, labels, paths = [], [], []
    for y, name in enumerate(classes):
        for path in sorted((root / name).glob("*.png"))[:per_class]:
            pixels.append(resize(load_rgb(str(path)), image_size, "pad"))
            labels.append(y)
            paths.append(str(path))
    return Cells(np.stack(pixels), tuple(paths), np.asarray(labels), np.arange(len(paths)))


def bench_adapt_cost(backbone: str, image_size: int, per_class: int, classes: int, workdir: str,
                     variants: dict[str, Plan] | None = None) -> pd.DataFrame:
    names = tuple(SYNTHETIC_CLASSES[:classes])
    root = synthetic.generate(Path(workdir) / "site1", classes=names, images_per_class=per_class, image_size=96,
                              seed=1000, site=1)
    labelled = _cells(root, names, per_class, image_size)
    home = log_statistics(labelled.pixels[:, ::-1])  # any home statistics: only the cost is measured here
    lab = Lab(labelled, no_cells(image_size), colour_map(log_statistics(labelled.pixels), home))
    variants = variants or {"default steps, chosen": Plan(), "default steps, as asked": Plan(choose=False),
                            "head alone": Plan(steps=("head",), choose=False),
                            "last alone": Plan(steps=("last",), choose=False),
                            "whole alone": Plan(steps=("whole",), choose=False)}
    rows = []
    for name, plan in variants.items():
        source = _network(backbone, image_size, names)
        started = time.perf_counter()
        result = adapt(source, lab, plan, seed=0)
        rows.append({"variant": name, "steps": "+".join(result.steps) or "none",
                     "seconds": round(time.perf_counter() - started, 1)})
        print(f"{name}: {rows[-1]}", flush=True)
    out = pd.DataFrame(rows)
    print(f"\n{backbone} (random weights) at {image_size} px, {per_class} labelled cells x {classes} classes, "
          f"{torch.get_num_threads()} CPU threads\n")
    print(out.to_string(index=False))
    return out
