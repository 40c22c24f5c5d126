"""Where the images are decoded: on the Ray nodes that can read them.

- Files in a bucket, or in a folder that every node sees (NFS): decode tasks spread over every
  node with CPUs, each reading its share from where the files are.
- Files that only the driver's machine sees (its own disk, as on a cloud head node): the tasks are
  pinned to the driver's node and ask Ray for no CPU, so they run whatever CPUs Ray gives that
  node (a head started with ``CPU: 0`` included), as many at a time as the machine has cores.

Whether other nodes see a local folder is asked of them, not assumed: a probe task on each node
looks for a few of the files with the same size and modification time. Each decode task returns
the pixels with the node it ran on, so a search says which node decoded what.

Ray tasks, not Ray Data's reader, by measurement (``python -m leuktune.bench decode``, 2,004 PNGs,
one to two worker nodes): 1.6-1.9x faster from a bucket, 7x from the driver's disk, where Ray
Data's executor starts slower and its map ships the files' bytes to other nodes to decode there.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from leuktune import uris
from leuktune.data.decode import examine
from leuktune.data.files import DataError, stat

# Images per decode task: enough to amortise a task's overhead, few enough that every CPU gets a
# share (a small set too: at least two tasks per CPU where the set allows).
CHUNK = (8, 64)
PROBE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Node:
    id: str
    ip: str
    cpus: float

    def __str__(self) -> str:
        return f"{self.ip} (node {self.id[:6]})"


@dataclass(frozen=True)
class Placement:
    """Which nodes decode: ``pinned`` to the driver's, or spread over every node with CPUs."""

    pinned: bool
    driver: Node
    slots: int  # tasks that run at once: the driver machine's cores, or the CPUs of every node
    why: str

    def chunk(self, images: int) -> int:
        return max(CHUNK[0], min(CHUNK[1], math.ceil(images / (2 * max(1, self.slots)))))


@dataclass
class Decoded:
    """Every file examined, in order (decode.examine's tuples), and what each node did."""

    pixels: np.ndarray
    results: list[tuple]  # (content hash, perceptual hash, error) per file
    by_node: dict[str, tuple[int, int]] = field(default_factory=dict)  # str(node) -> (images, bytes read)

    def summary(self) -> str:
        return "; ".join(f"{node}: {n} images, {size / 1e6:.1f} MB read" for node, (n, size) in self.by_node.items())


def alive_nodes() -> list[Node]:
    return [Node(n["NodeID"], n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0))
            for n in ray.nodes() if n["Alive"]]


def this_node() -> Node:
    """The node this process runs on (its CPUs not asked: only its name is wanted)."""
    return Node(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), 0)


@ray.remote(num_cpus=0)
def _sees(samples: list[tuple[str, int, int]]) -> bool:
    return stat([path for path, _, _ in samples]) == [(size, mtime) for _, size, mtime in samples]


def _pinned_to(node: Node) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node.id, soft=False)


def unseen_by(nodes: list[Node], samples: list[tuple[str, int, int]]) -> list[Node]:
    """The nodes that do not see these files (path, size, mtime_ns) as the driver does, or do not answer."""
    probes = {n: _sees.options(scheduling_strategy=_pinned_to(n)).remote(samples) for n in nodes}
    ready, _ = ray.wait(list(probes.values()), num_returns=len(probes), timeout=PROBE_TIMEOUT_S)
    unseen = []
    for node, ref in probes.items():
        try:
            seen = ref in ready and ray.get(ref)
        except ray.exceptions.RayError:  # the node went away meanwhile
            seen = False
        if not seen:
            unseen.append(node)
    for ref in set(probes.values()) - set(ready):
        ray.cancel(ref, force=True)
    return unseen


def other_nodes(nodes: list[Node] | None = None) -> list[Node]:
    """The alive nodes with CPUs other than the driver's (of ``nodes``, default all alive ones):
    where trials and decode tasks may run."""
    driver = ray.get_runtime_context().get_node_id()
    return [n for n in (alive_nodes() if nodes is None else nodes) if n.id != driver and n.cpus > 0]


def place(paths: list[str], sizes: list[int], mtimes: list[int]) -> Placement:
    """Where the decode tasks of these files run (see the module's docstring)."""
    nodes = alive_nodes()
    driver_id = ray.get_runtime_context().get_node_id()
    driver = next(n for n in nodes if n.id == driver_id)
    on_driver = int(driver.cpus) or len(os.sched_getaffinity(0))
    others = other_nodes(nodes)
    everywhere = int(sum(n.cpus for n in nodes))
    local = [i for i, p in enumerate(paths) if not uris.is_uri(p)]
    if not others:
        return Placement(True, driver, on_driver, "the driver's node is the only one with CPUs")
    if not local:
        return Placement(False, driver, everywhere, "the files are in a bucket")
    picks = sorted({local[0], local[len(local) // 2], local[-1]})  # a node that sees these, unchanged, shares the folder
    unseen = unseen_by(others, [(paths[i], sizes[i], mtimes[i]) for i in picks])
    if unseen:
        return Placement(True, driver, on_driver,
                         f"the files are on the driver's disk, which {len(unseen)} of {len(others)} other node(s) "
                         f"do not see (e.g. {unseen[0]})")
    return Placement(False, driver, everywhere, "every node sees the files (a shared folder)")


@ray.remote(num_cpus=1)
def _examine_chunk(paths: list[str], size: int, mode: str, stain=None):
    node = str(this_node())
    results = [examine(p, size, mode, where=f"on {node}", stain=stain) for p in paths]
    pixels = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, (px, *_rest) in enumerate(results):
        if px is not None:
            pixels[i] = px
    return pixels, [r[1:] for r in results], node


def decode(paths: list[str], sizes: list[int], mtimes: list[int], size: int, mode: str,
           progress: Callable[[str], None] = print, stain=None) -> Decoded:
    """Every file examined once by Ray tasks on the nodes that can read it, with progress lines
    (``stain``: the normaliser each task applies, leuktune.data.stain)."""
    placement = place(paths, sizes, mtimes)
    progress(f"[leuktune] decoding {len(paths)} images "
             f"{'on the driver node ' + str(placement.driver) if placement.pinned else 'across the cluster'}: "
             f"{placement.why}")
    task = (_examine_chunk.options(num_cpus=0, scheduling_strategy=_pinned_to(placement.driver))
            if placement.pinned else _examine_chunk.options(scheduling_strategy="SPREAD"))
    step = placement.chunk(len(paths))
    chunks = [(i, paths[i:i + step]) for i in range(0, len(paths), step)]
    limit = placement.slots if placement.pinned else len(chunks)  # spread: Ray schedules by CPUs
    report_every = max(1, len(chunks) // 10)
    out = Decoded(np.zeros((len(paths), size, size, 3), np.uint8), [None] * len(paths))
    pending, finished, examined = {}, 0, 0
    while chunks or pending:
        while chunks and len(pending) < limit:
            start, chunk = chunks.pop(0)
            pending[task.remote(chunk, size, mode, stain)] = (start, chunk)
        done, _ = ray.wait(list(pending), num_returns=1)
        start, chunk = pending.pop(done[0])
        try:
            pixels, results, node = ray.get(done[0])
        except ray.exceptions.RayError as err:  # the task itself failed: a node lost, a worker killed
            first = str(err).strip().splitlines()[0]
            raise DataError(f"decoding {chunk[0]} and {len(chunk) - 1} more file(s) failed: {first}") from None
        out.pixels[start:start + len(chunk)] = pixels
        out.results[start:start + len(chunk)] = results
        images, read = out.by_node.get(node, (0, 0))
        out.by_node[node] = (images + len(chunk), read + sum(sizes[start:start + len(chunk)]))
        finished, examined = finished + 1, examined + len(chunk)
        if finished % report_every == 0 or not (chunks or pending):
            progress(f"[leuktune] decoding images: {examined}/{len(paths)}")
    return out
