"""How the per-worker loop talks to whatever launched it.

The loop needs five things from its launcher: its rank among the trial's workers, its
device, the checkpoint to resume from, a way to report an epoch (with a checkpoint), and
the model wrapped for data-parallel training. A Ray Train worker gets them from Ray Train;
a trial that runs the loop directly in its Tune function gets them from Tune. The loop is
the same either way (see leuktune.training.trainer for which launcher runs a trial).
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from leuktune import internals


class _RaySession:
    """Checkpoints and reports through ``_api``: ``ray.train`` or ``ray.tune``, which offer the
    same three names for them."""

    _api: Any

    @staticmethod
    def node() -> dict[str, str]:
        """The Ray node this worker runs on (the leaderboard and history say where a trial ran)."""
        # Ray only in a Ray session: the loop runs without it too (tests' fake session)
        from leuktune.data.placement import this_node

        node = this_node()
        return {"node_ip": node.ip, "node_id": node.id}

    def checkpoint(self):
        return self._api.get_checkpoint()

    def report(self, metrics: dict[str, Any], folder: Optional[str]) -> None:
        checkpoint = self._api.Checkpoint.from_directory(folder) if folder else None
        self._api.report(metrics, checkpoint=checkpoint)


class TrainSession(_RaySession):
    """A Ray Train worker of a ``TorchTrainer``: possibly one of several (DDP)."""

    def __init__(self):
        # Ray only in a Ray session: the loop runs without it too (tests' fake session)
        import ray.train
        import ray.train.torch

        self._api = ray.train
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        # Ray only in a Ray session: the loop runs without it too (tests' fake session)
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=False)


class TuneSession(_RaySession):
    """A Tune function trial that runs the loop itself: one worker, on the GPU Tune gave it
    (Ray sets CUDA_VISIBLE_DEVICES for the trial's actor) or the CPU."""

    rank, world_size = 0, 1

    def __init__(self, use_gpu: bool):
        # Ray only in a Ray session: the loop runs without it too (tests' fake session)
        from ray import tune

        # Tune logs every stored checkpoint at INFO; leuktune prints its own line per epoch.
        internals.quiet_tune_storage()
        self._api = tune
        self.device = torch.device("cuda", 0) if use_gpu and torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model


@contextlib.contextmanager
def checkpoint_folder() -> Iterator[str]:
    """A scratch folder for a checkpoint being reported: Ray copies it to storage during the
    report, and the scratch copy goes when the block ends."""
    with tempfile.TemporaryDirectory(prefix="leuktune-ckpt-") as folder:
        yield folder


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather(values: np.ndarray) -> np.ndarray:
    """Every worker's rows, so validation metrics cover the whole split, not one shard."""
    if not distributed():
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def average_over_workers_(tensor: torch.Tensor) -> None:
    """``tensor`` replaced, in place, by its mean over the trial's workers."""
    if distributed():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()


def sum_over_workers(*values: torch.Tensor) -> list[float]:
    total = torch.stack([v.float() for v in values])
    if distributed():
        dist.all_reduce(total)
    return total.tolist()
