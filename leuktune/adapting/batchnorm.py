"""The BatchNorm step (AdaBN, Li et al. 2016): a network's normalisation statistics re-estimated on
the lab's images, so that its layers see the lab's cells centred and scaled as they saw the home
lab's. Labels are not read; the images are the lab's labelled cells and any unlabelled ones given,
never those it is scored on."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from leuktune.adapting.networks import Network


def layers(network: Network) -> list[_BatchNorm]:
    return [m for m in network.classifier.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate(network: Network, pixels: np.ndarray, batch_size: int = 32) -> int:
    """Re-estimate every BatchNorm layer's running statistics on ``pixels`` (an equal-weight average
    over batches of near-equal size, never one image alone), the rest of the network in eval mode;
    returns how many layers (0: it has none, as a ViT)."""
    found = layers(network)
    if not found or len(pixels) < 2:
        return 0
    module = network.classifier  # fed the recoloured input (Network.inputs) where the map is on
    module.eval()
    momenta = [bn.momentum for bn in found]
    for bn in found:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: every batch counts alike
        bn.train()
    try:
        for rows in np.array_split(np.arange(len(pixels)), max(1, len(pixels) // batch_size)):
            module(network.inputs(pixels[rows]))
    finally:
        for bn, momentum in zip(found, momenta):
            bn.momentum = momentum
        module.eval()
    return len(found)
