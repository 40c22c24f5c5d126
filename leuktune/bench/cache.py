"""An epoch read from the decode-once cache vs the same epoch decoded from files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from leuktune.config import SYNTHETIC_CLASSES
from leuktune.data import cache, synthetic
from leuktune.data.decode import load_rgb, resize
from leuktune.data.sources import imagefolder
from leuktune.runtime import ray_session


def bench_cache(workdir: str, images: int, source_size: int, image_size: int, batch: int) -> dict:
    """An epoch read from the decode-once cache vs the same epoch decoded from files."""
    root = Path(workdir) / "set"
    per_class = -(-images // len(SYNTHETIC_CLASSES))
    started = time.perf_counter()
    synthetic.generate(root, images_per_class=per_class, image_size=source_size)
    manifest = imagefolder(root).head(images)
    print(f"{len(manifest)} synthetic {source_size}px PNGs ready in {time.perf_counter() - started:.0f}s", flush=True)
    with ray_session():
        t = time.perf_counter()
        cache.scan(manifest, image_size, "pad", Path(workdir) / "cache", progress=lambda m: None)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        messages = []
        second = cache.scan(manifest, image_size, "pad", Path(workdir) / "cache", progress=messages.append)
        second_s = time.perf_counter() - t
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
