"""The plain fine-tune that leuktune's adapting must beat (issue #38's floor, written by hand on
three real other-lab sets): BatchNorm statistics re-estimated on the lab's images, then 60 AdamW
steps at 3e-4 on the whole network in training mode, batches of 32 labelled cells in random quarter
turns and mirrors. Every network of the model is tuned so; its temperature is left as it was."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from leuktune.adapting import Cells, batchnorm
from leuktune.adapting.networks import networks
from leuktune.trained import Trained
from leuktune.training.features import VIEWS, oriented

STEPS, LR, BATCH = 60, 3e-4, 32


def plain_fine_tune(source: Trained, labelled: Cells, unlabelled: Cells, *, seed: int = 0) -> Trained:
    """``source`` (freshly loaded) tuned in place as the module's docstring says; returns it."""
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(np.asarray(labelled.labels, dtype=np.int64))
    for network in networks(source):
        batchnorm.reestimate(network, (labelled + unlabelled).pixels, BATCH)
        classifier = network.classifier
        for p in classifier.parameters():
            p.requires_grad_(True)
        classifier.unfreeze_depth = len(classifier.backbone.groups)
        classifier.train()
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=LR)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(STEPS):
                rows = rng.choice(len(y), min(BATCH, len(y)), replace=False)
                x = network.inputs(labelled.pixels[rows])
                views = rng.integers(0, len(VIEWS), len(rows))
                x = torch.cat([oriented(x[i:i + 1], int(view)) for i, view in enumerate(views)])
                loss = nn.functional.cross_entropy(classifier(x), y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        classifier.eval()
    return source
