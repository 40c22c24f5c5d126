"""Benchmarks whose figures go into issue notes; timings live here, never in tests.

    python -m leuktune.bench models                 # every named backbone: params, features, groups, img/s
    python -m leuktune.bench models --backbones resnet50 vgg16 --image-size 224 --batch 8
    python -m leuktune.bench cache                  # decode-once cache vs decoding files each epoch
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

NAMED_BACKBONES = [
    "resnet50", "densenet121", "efficientnet_b0", "inception_v3", "vgg16", "vgg19", "xception41",
    "legacy_xception", "convnext_tiny", "efficientnetv2_rw_t", "vit_tiny_patch16_224", "alexnet",
    "googlenet", "test_resnet", "test_efficientnet", "test_vit",
]


def bench_models(backbones: list[str], image_size: int, batch: int, steps: int) -> list[dict]:
    from leuktune.config import ModelConfig
    from leuktune.models.build import build_model, count_parameters

    rows = []
    for name in backbones:
        model = build_model(ModelConfig(backbone=name, head="linear"), 2, image_size).train()
        with torch.device("meta"):  # can the backbone's own activation be swapped (timm act_layer)?
            settable = build_model(ModelConfig(backbone=name, activation="leaky_relu"), 2,
                                   image_size).backbone.activation == "leaky_relu"
        x = torch.randn(batch, 3, image_size, image_size)
        y = torch.zeros(batch, dtype=torch.long)
        with torch.no_grad():
            features = model.backbone(x[:1])
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


def bench_cache(workdir: str, images: int, source_size: int, image_size: int, batch: int) -> dict:
    """An epoch read from the decode-once cache vs the same epoch decoded from files."""
    from pathlib import Path

    import numpy as np
    import ray

    from leuktune.config import SYNTHETIC_CLASSES
    from leuktune.data import cache, synthetic
    from leuktune.data.decode import load_rgb, resize
    from leuktune.data.sources import imagefolder

    root = Path(workdir) / "set"
    per_class = -(-images // len(SYNTHETIC_CLASSES))
    started = time.perf_counter()
    synthetic.generate(root, images_per_class=per_class, image_size=source_size)
    manifest = imagefolder(root).head(images)
    print(f"{len(manifest)} synthetic {source_size}px PNGs ready in {time.perf_counter() - started:.0f}s", flush=True)
    owns = not ray.is_initialized()
    if owns:
        ray.init(logging_level="WARNING")
    try:
        t = time.perf_counter()
        first = cache.scan(manifest, image_size, "pad", Path(workdir) / "cache", progress=lambda m: None)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        messages = []
        second = cache.scan(manifest, image_size, "pad", Path(workdir) / "cache", progress=messages.append)
        second_s = time.perf_counter() - t
    finally:
        if owns:
            ray.shutdown()
    pixels = np.ascontiguousarray(second.pixels)  # what a trial holds from the object store
    order = np.random.default_rng(0).permutation(len(pixels))
    t = time.perf_counter()
    for start in range(0, len(order), batch):  # the trainer's access pattern: shuffled batches
        pixels[np.sort(order[start:start + batch])].copy()
    cached_epoch_s = time.perf_counter() - t
    paths = manifest["path"].tolist()
    t = time.perf_counter()
    for i in order:  # one process decoding each file, as a plain Dataset would per epoch
        resize(load_rgb(paths[i]), image_size, "pad")
    decode_epoch_s = time.perf_counter() - t
    return {
        "images": len(manifest),
        "first_run_decode_pass_s": round(first_s, 2),
        "first_run_images_per_s (Ray tasks)": round(len(manifest) / first_s, 1),
        "second_run_s": round(second_s, 3),
        "second_run_decoded": not any("reused" in m for m in messages),
        "cached_epoch_images_per_s": round(len(manifest) / cached_epoch_s, 1),
        "decode_epoch_images_per_s (1 process)": round(len(manifest) / decode_epoch_s, 1),
        "speedup_per_epoch": round(decode_epoch_s / cached_epoch_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    models = sub.add_parser("models", help="forward+backward speed and shape of each backbone")
    models.add_argument("--backbones", nargs="+", default=NAMED_BACKBONES)
    models.add_argument("--image-size", type=int, default=224)
    models.add_argument("--batch", type=int, default=8)
    models.add_argument("--steps", type=int, default=3)
    caching = sub.add_parser("cache", help="epoch read from the decode-once cache vs decoding files")
    caching.add_argument("--workdir", default="runs/bench-cache")
    caching.add_argument("--images", type=int, default=2000)
    caching.add_argument("--source-size", type=int, default=256)
    caching.add_argument("--image-size", type=int, default=224)
    caching.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    if args.what == "cache":
        for key, value in bench_cache(args.workdir, args.images, args.source_size, args.image_size,
                                      args.batch).items():
            print(f"{key}: {value}")
        return 0
    if args.what == "models":
        import pandas as pd

        rows = bench_models(args.backbones, args.image_size, args.batch, args.steps)
        print(f"\nCPU, {torch.get_num_threads()} threads, batch {args.batch}, {args.image_size}px\n")
        print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(rows).to_string(index=False))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
