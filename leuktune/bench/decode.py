"""The decode pass on the cluster in sight: leuktune's Ray tasks (leuktune.data.placement) against
Ray Data's reader (``read_binary_files`` then a ``map_batches`` decode, the engine the issue
suggested), per 1,000 images, with the images and bytes each node read."""

from __future__ import annotations

import time

import numpy as np

from leuktune import uris
from leuktune.data import placement, sources
from leuktune.data.decode import resize, rgb_of
from leuktune.runtime import ray_session


def _decode_batch(batch: dict, size: int) -> dict:
    """Ray Data's side: each file's bytes decoded and resized as leuktune's tasks do, where they were read."""
    pixels = [resize(rgb_of(data), size, "pad") for data in batch["bytes"]]
    node = str(placement.this_node())
    return {"pixels": np.stack(pixels), "node": np.array([node] * len(pixels)),
            "read": np.array([len(b) for b in batch["bytes"]])}


def _with_ray_data(paths: list[str], size: int, pinned: bool) -> dict[str, tuple[int, int]]:
    # Ray Data only for the side of the comparison that uses it
    import ray

    fs, _ = uris.resolve(paths[0])
    located = [uris.resolve(p)[1] for p in paths]
    if pinned:  # Ray Data reads a driver's own files under its local:// scheme, on the driver's node
        located = [f"local://{p}" for p in located]
    remote = {"num_cpus": 0} if pinned else {}  # a head with CPU: 0 has nothing else to give
    dataset = ray.data.read_binary_files(located, filesystem=None if pinned else fs, ray_remote_args=remote)
    decoded = dataset.map_batches(_decode_batch, fn_kwargs={"size": size}, batch_size=64, **remote)
    by_node: dict[str, tuple[int, int]] = {}
    images = 0
    for batch in decoded.iter_batches(batch_size=None, batch_format="numpy"):
        images += len(batch["pixels"])
        for node, read in zip(batch["node"], batch["read"]):
            n, b = by_node.get(node, (0, 0))
            by_node[node] = (n + 1, b + int(read))
    assert images == len(paths)
    return by_node


def bench_decode(root: str, image_size: int, engines: list[str], address: str | None) -> dict:
    manifest = sources.imagefolder(root)
    paths, sizes, mtimes = manifest["path"].tolist(), manifest["bytes"].tolist(), manifest["mtime_ns"].tolist()
    out: dict = {"images": len(paths), "megabytes": round(sum(sizes) / 1e6, 1)}
    with ray_session(address):
        where = placement.place(paths, sizes, mtimes)
        out["nodes with CPUs"] = sum(n.cpus > 0 for n in placement.alive_nodes())
        out["placement"] = ("pinned to the driver's node: " if where.pinned else "spread: ") + where.why
        for engine in engines:
            started = time.perf_counter()
            if engine == "tasks":
                by_node = placement.decode(paths, sizes, mtimes, image_size, "pad", progress=lambda m: None).by_node
            else:
                by_node = _with_ray_data(paths, image_size, where.pinned)
            seconds = time.perf_counter() - started
            out[f"{engine}: s per 1000 images"] = round(seconds / len(paths) * 1000, 2)
            for node, (n, read) in sorted(by_node.items()):
                out[f"{engine}: {node}"] = f"{n} images, {read / 1e6:.1f} MB read"
    return out

