"""The one checkpoint format: written by the trainer, read to resume a trial and to evaluate.

A checkpoint is a folder (a Ray ``Checkpoint``) holding ``checkpoint.pt``: the model,
optimiser, scheduler and AMP scaler states, the epoch, the class names, the input
normalisation and the trial's resolved configuration, so evaluation and prediction need
nothing else; ``meta.json``: the epoch (the leaderboard finds a trial's kept checkpoint by it
without reading the weights), the kept epoch so far (``kept``; ``best`` in earlier releases) and
the epoch's metrics, which are known only after validation, while ``checkpoint.pt`` may already be
written in the background (``load`` returns both as one state; older checkpoints hold the kept
epoch in ``checkpoint.pt``). Nothing
writes into a checkpoint after its trial: the temperature the final evaluation fits is in the run's
``test.parquet`` (an earlier release wrote ``calibration.json`` here, which is still read). The
folder may be local or in a bucket (a URI as the leaderboard's ``checkpoint_uri`` gives it).
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch

from leuktune.config import ExperimentConfig
from leuktune import uris
from leuktune.errors import LeuktuneError
from leuktune.leaderboard.ties import ValPredictions

FILE = "checkpoint.pt"
META = "meta.json"
CALIBRATION = "calibration.json"  # written by earlier releases only
# A cross-validated trial's checkpoint (search.cv) is a folder of its folds' checkpoints, each a
# checkpoint as above, and a meta.json of its own that says how many (``folds``).
FOLD = "fold_{}"
# The validation split's predictions at the checkpoint's epoch (leuktune.leaderboard.ties.ValPredictions,
# float16: a few bytes an image), which the search reads to compare trials image by image; an earlier
# release's checkpoints have none.
VAL_PREDICTIONS = "val_predictions.npz"


class CheckpointError(LeuktuneError, ValueError):
    """A checkpoint that cannot be read, phrased for the researcher pointing at it."""


def plain(value: Any) -> Any:
    """Metadata as the types ``torch.load(weights_only=True)`` accepts: numbers, text, lists,
    tuples, dicts and tensors (numpy values and paths are converted)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_state(folder: str | Path, state: dict[str, Any]) -> None:
    torch.save(plain(state), Path(folder) / FILE)


def write_meta(folder: str | Path, meta: dict[str, Any]) -> None:
    """The small part of a checkpoint known only once its epoch is judged (its epoch, the best so
    far, the epoch's metrics), beside the weights that may have been written before."""
    (Path(folder) / META).write_text(json.dumps(plain(meta), allow_nan=True))


def write_val_predictions(folder: str | Path, predictions: ValPredictions) -> None:
    np.savez(Path(folder) / VAL_PREDICTIONS, **predictions.arrays())


def read_val_predictions(location: str | Path) -> list[ValPredictions] | None:
    """The validation predictions a stored checkpoint keeps, one per fold of a cross-validated
    trial's (one for any other); None where it keeps none (an earlier release's)."""
    folds = folds_of(location)
    found = []
    for place in [fold_location(location, f) for f in range(folds)] if folds else [str(location)]:
        data = _read(place, VAL_PREDICTIONS)
        if data is None:
            return None
        with np.load(io.BytesIO(data)) as arrays:  # no pickles: numbers only
            found.append(ValPredictions.from_arrays(arrays))
    return found


def on_host(state: Any) -> Any:
    """A copy of ``state`` whose tensors are on the CPU and no longer shared with the training
    (which goes on changing the originals while the copy is written)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: on_host(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_host(v) for v in state)
    return copy.deepcopy(state)


class BackgroundWrite:
    """``checkpoint.pt`` of a snapshot written in a thread, so that it overlaps the work that
    follows (the validation pass) instead of adding to the epoch; ``wait`` returns when it is on
    disk and raises what the write raised (a full disk, say). The seconds it took are kept."""

    def __init__(self, folder: str | Path, state: dict[str, Any]):
        self.folder, self.seconds = folder, 0.0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, args=(state,), name="leuktune-checkpoint", daemon=True)
        self._thread.start()

    def _write(self, state: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            write_state(self.folder, state)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            self._error = err
        self.seconds = time.perf_counter() - started

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _locate(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, folder) of a checkpoint given as its folder or its checkpoint.pt, local or a URI."""
    fs, path = uris.resolve(location)
    path = path.rstrip("/")
    return fs, path.rpartition("/")[0] if path.endswith(FILE) else path


def _read(location: str, name: str = FILE) -> bytes | None:
    """The bytes of a file of a checkpoint folder, None when absent."""
    fs, folder = _locate(location)
    if fs.get_file_info(f"{folder}/{name}").type != pafs.FileType.File:
        return None
    with fs.open_input_stream(f"{folder}/{name}") as f:
        return f.read()


def read_calibration(location: str) -> dict[str, Any]:
    """What an earlier release's final evaluation stored in the checkpoint (its temperature); {} when nothing."""
    data = _read(location, CALIBRATION)
    return json.loads(data) if data else {}


def folds_of(location: str | Path) -> int:
    """How many fold checkpoints a cross-validated trial's checkpoint holds; 0 for any other."""
    meta = _read(str(location), META)
    return int(json.loads(meta).get("folds", 0)) if meta else 0


def fold_location(location: str | Path, fold: int) -> str:
    """The checkpoint of fold ``fold`` inside a cross-validated trial's checkpoint, as a location of the same store."""
    _, folder = _locate(str(location))
    return uris.child(str(location), f"{folder}/{FOLD.format(fold)}")


def load(folder: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``folder`` is a checkpoint folder or the ``checkpoint.pt`` in it, local or a URI."""
    where = str(folder)
    data = _read(where)
    if data is None:
        raise CheckpointError(f"{where}: no such checkpoint (expected a folder holding {FILE}, as in the "
                              "leaderboard's checkpoint_uri column)")
    try:
        # Weights and plain values only: a shared checkpoint cannot run code when it is loaded.
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(data)
        raise CheckpointError(
            f"{where}: refused: it holds pickled Python objects ({', '.join(unsafe) or 'see below'}), not only "
            f"weights and plain values; leuktune loads checkpoints with torch.load(weights_only=True) so that a "
            f"checkpoint cannot run code. ({str(err).splitlines()[0]})") from None
    except Exception as err:  # noqa: BLE001 - any other failure means the same to the user
        raise CheckpointError(f"{where}: not a readable leuktune checkpoint ({type(err).__name__}: {err})") from None
    meta = _read(where, META)
    if meta:  # the kept epoch so far and the epoch's metrics, written once the epoch was judged
        for key, value in json.loads(meta).items():
            state.setdefault(key, value)
    missing = {"model", "epoch", "class_names", "normalization", "experiment"} - set(state)
    if missing:
        raise CheckpointError(f"{where}: not a leuktune checkpoint; missing {sorted(missing)}")
    return state


def _unsafe_globals(data: bytes) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except Exception:  # noqa: BLE001 - only for the message
        return []


def experiment(state: dict[str, Any]) -> ExperimentConfig:
    return ExperimentConfig.model_validate(state["experiment"])


def epoch_of(fs: pafs.FileSystem, folder: str) -> int | None:
    """The epoch a stored checkpoint folder holds (from its meta.json), or None."""
    try:
        with fs.open_input_stream(f"{folder}/{META}") as f:
            return int(json.loads(f.read())["epoch"])
    except (OSError, ValueError, KeyError):
        return None
