"""Every named backbone: parameters, feature shapes, stage groups, forward+backward speed."""

from __future__ import annotations

import time

import torch

from leuktune.config import ModelConfig
from leuktune.models.classifier import build_model, count_parameters

NAMED_BACKBONES = [
    "resnet50", "densenet121", "efficientnet_b0", "inception_v3", "vgg16", "vgg19", "xception41",
    "legacy_xception", "convnext_tiny", "efficientnetv2_rw_t", "vit_tiny_patch16_224", "alexnet",
    "googlenet", "test_resnet", "test_efficientnet", "test_vit",
]


def bench_models(backbones: list[str], image_size: int, batch: int, steps: int) -> list[dict]:
    rows = []
    for name in backbones:
        model = build_model(ModelConfig(backbone=name, head="linear"), 2, image_size).train()
        with torch.device("meta"):  # can the backbone's own activation be swapped (timm act_layer)?
            settable = build_model(ModelConfig(backbone=name, activation="leaky_relu"), 2,
                                   image_size).backbone.activation == "leaky_relu"
        x = torch.randn(batch, 3, image_size, image_size)
        y = torch.zeros(batch, dtype=torch.long)
        with torch.no_grad():  # eval: one image through batch norm in train mode fails at a 1x1 feature map
            features = model.backbone.eval()(x[:1])
        model.train()
        times = []
        for step in range(steps + 1):  # the first step warms up allocators and kernels
            started = time.perf_counter()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)
            if step:
                times.append(time.perf_counter() - started)
        rows.append({
            "backbone": name,
            "params_M": round(count_parameters(model)[0] / 1e6, 2),
            "pooled_features": model.backbone.num_features,
            "feature_map": "x".join(map(str, features.shape[1:])),
            "stage_groups": len(model.backbone.groups),
            "activation_settable": settable,
            "fwd_bwd_img_per_s": round(batch / (sum(times) / len(times)), 1),
        })
        print(rows[-1], flush=True)
    return rows
