"""Class activation maps (Grad-CAM, the ``grad-cam`` package) of a few test images per class:
where in the smear the model looked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from leuktune.report.figures import save  # noqa: E402


def _target(model):
    """(layer, reshape) for Grad-CAM. A CNN's feature map is the backbone's own output. A ViT
    pools its class token after the last norm, so its patch tokens get no gradient there: the
    last block's first norm is used, its tokens laid back on their grid."""
    network = model.module.backbone.model
    if not hasattr(network, "num_prefix_tokens"):
        return model.module.backbone, None
    size = model.config.data.image_size
    grid = network.patch_embed.dynamic_feat_size((size, size)) if getattr(network, "dynamic_img_size", False) \
        else network.patch_embed.grid_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, network.num_prefix_tokens:, :]
        return tokens.reshape(tokens.shape[0], *grid, tokens.shape[2]).permute(0, 3, 1, 2)

    return network.blocks[-1].norm1, reshape


def feature_grid(model) -> str:
    """The resolution of the map Grad-CAM reads (a CNN's last feature map is the image / 32)."""
    size = model.config.data.image_size
    with torch.no_grad():
        features = model.module.backbone(torch.zeros(1, 3, size, size, device=model.device))
    return "x".join(map(str, features.shape[2:])) if features.ndim == 4 else f"{features.shape[1]} tokens"


def class_activation_maps(model, test: pd.DataFrame, path: Path, per_class: int = 3) -> Path:
    """A grid: for each class, ``per_class`` test images and the map of the class predicted for each."""
    chosen = test.groupby("label", sort=True).head(per_class)
    pixels, rows = model.load_images(chosen["path"].tolist())
    x = model.model_input(pixels).to(model.device).requires_grad_(True)  # a frozen backbone too
    layer, reshape = _target(model)
    network = model.module.float()
    with torch.no_grad():
        predicted = network(x).argmax(dim=1).tolist()
    with GradCAM(model=network, target_layers=[layer], reshape_transform=reshape) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in predicted])
    network.zero_grad(set_to_none=True)
    labels = chosen["label"].tolist()
    columns = max(1, chosen.groupby("label").size().max())
    classes = sorted(set(labels))
    fig, axes = plt.subplots(len(classes), columns, figsize=(2.2 * columns, 2.3 * len(classes)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    slot = {c: 0 for c in classes}
    for image, heat, label, guess in zip(pixels, maps, labels, predicted):
        ax = axes[classes.index(label), slot[label]]
        slot[label] += 1
        ax.imshow(show_cam_on_image(image.astype(np.float32) / 255, heat, use_rgb=True))
        ax.set_title(f"{label} -> {model.classes[guess]}", fontsize=8)
    return save(fig, path)
