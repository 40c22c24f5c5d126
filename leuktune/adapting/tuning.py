"""The tuning steps: a network fine-tuned on a few labelled cells of the lab.

A white cell has no up or left, so each labelled cell counts eight times (the symmetries of the
square, ``leuktune.training.features.VIEWS``). The head alone is tuned on the backbone's features of
those views, computed once (as a frozen trial's features are): hundreds of head steps cost less
than one pass of the backbone. The last stage group with the head, or the whole network, are tuned
on pixels: random views, with stain and colour jitter where asked (``leuktune.data.augment``), a few steps.
BatchNorm statistics stay as they are while tuning (re-estimated on the lab's images, or the home
lab's): a batch of 20 cells cannot estimate them. Learning rates are the trial's own scaled by
``Plan.lr_scale`` (the backbone at the trial's ``backbone_lr_mult`` of the head's), with its weight
decay and label smoothing, decayed to zero on a cosine.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from leuktune.adapting.networks import Network
from leuktune.adapting.plan import Plan
from leuktune.config import AugmentConfig
from leuktune.data.augment import augment_batch
from leuktune.models.classifier import set_unfreeze_depth
from leuktune.training.features import oriented
from leuktune.training.optim import param_groups

# the stage groups "last" tunes (with the head)
LAST_GROUPS = 1


@torch.no_grad()
def features(network: Network, pixels: np.ndarray, views: int, batch_size: int = 32) -> torch.Tensor:
    """(N, views, *shape) float32: the backbone's output over each view of each image (pooled, or
    its tokens for a head that attends over them), in eval mode, recoloured where the map is on."""
    classifier = network.classifier
    classifier.eval()
    out = []
    for start in range(0, len(pixels), batch_size):
        x = network.inputs(pixels[start:start + batch_size])
        per_view = []
        for view in range(views):
            f = classifier.backbone(oriented(x, view))
            per_view.append((f if classifier.head.needs_spatial else classifier.backbone.pool(f)).float())
        out.append(torch.stack(per_view, dim=1))
    return torch.cat(out)


@torch.no_grad()
def head_probabilities(head: nn.Module, feats: torch.Tensor) -> np.ndarray:
    """Class probabilities of the images as they are (view 0) from their cached features."""
    head.eval()
    return torch.softmax(head(feats[:, 0]).float(), dim=1).cpu().numpy()


def _cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))


def _batches(count: int, steps: int, batch_size: int, rng: np.random.Generator):
    """Each step's rows: a fresh shuffle whenever one runs out (every cell as often as the others)."""
    order: list[int] = []
    for _ in range(steps):
        rows = []
        while len(rows) < min(batch_size, count):
            if not order:
                order = list(rng.permutation(count))
            rows.append(order.pop())
        yield np.asarray(rows)


def tune_head(network: Network, feats: torch.Tensor, labels: np.ndarray, plan: Plan, seed: int) -> nn.Module:
    """A copy of the network's head tuned on cached features (N, views, ...) of labelled cells."""
    train = network.config.train
    head = copy.deepcopy(network.classifier.head).train()
    for p in head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=plan.lr_scale * train.lr, weight_decay=train.weight_decay)
    schedule = _cosine(optimizer, plan.head_steps)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(feats.device)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for rows in _batches(len(y), plan.head_steps, plan.batch_size, rng):
            view = torch.from_numpy(rng.integers(0, feats.shape[1], len(rows)))
            x = feats[torch.from_numpy(rows), view]
            loss = nn.functional.cross_entropy(head(x), y[rows], label_smoothing=train.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return head.eval()


def tune_deep(network: Network, pixels: np.ndarray, labels: np.ndarray, tuning: str, plan: Plan, seed: int) -> None:
    """Tune the head and the last stage group (``last``) or the whole network (``whole``) in place,
    on labelled pixels in random dihedral views with stain and colour jitter."""
    classifier, setup, train = network.classifier, network.setup, network.config.train
    set_unfreeze_depth(classifier, LAST_GROUPS if tuning == "last" else "all")
    for p in classifier.head.parameters():
        p.requires_grad_(True)
    # BatchNorm statistics kept (see the module's docstring) and dropout off, unless asked otherwise
    classifier.train(plan.batch_statistics)
    optimizer = torch.optim.AdamW(param_groups(classifier, plan.lr_scale * train.lr, train.backbone_lr_mult,
                                               train.weight_decay))
    schedule = _cosine(optimizer, plan.deep_steps)
    jitter = AugmentConfig(flip=True, rotate=0, zoom=0, shear=0, color=plan.color, stain=plan.stain)
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(setup.device)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for rows in _batches(len(y), plan.deep_steps, plan.batch_size, rng):
                unit = augment_batch(setup.to_unit(torch.from_numpy(pixels[rows])), jitter)
                x = setup.model_input(unit)
                x = network.leaf.module.colour(x) if network.leaf.module is not classifier else x
                with setup.autocast():
                    loss = nn.functional.cross_entropy(classifier(x).float(), y[rows],
                                                       label_smoothing=train.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    finally:
        set_unfreeze_depth(classifier, network.depth)
        classifier.eval()
