"""GPU occupancy of a real search, for any GPU machine: how much of the search's wall time
the GPU computes, sampled every second through NVML.

A synthetic class folder is written (real PNG files), searched through ``leuktune.search``
like any image folder, and the GPU's utilisation (the share of each second in which a kernel
ran) is averaged from the moment the data is ready to the end of the search.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


from leuktune import leaderboard, runfolder
from leuktune.bench.overhead import LOOP_PHASES, TrialClock, overhead_per_trial, read_clock
from leuktune.config import SYNTHETIC_CLASSES, load
from leuktune.data import synthetic
from leuktune.models.space_check import check_model_space
from leuktune.runfolder import RunFolder
from leuktune.runtime import ray_session
from leuktune.tuning.driver import prepare_data, run_trials


def _render(job: tuple[str, int, int, str]) -> None:
    label, index, size, folder = job
    synthetic.render(label, 0, index, size).save(Path(folder) / label / f"{label}_{index:05d}.png")


def write_class_folder(root: Path, images: int, size: int) -> Path:
    """``images`` synthetic cells at ``size`` px in ``root/<class>/``, drawn on every core."""
    per_class = -(-images // len(SYNTHETIC_CLASSES))
    jobs = [(label, i, size, str(root)) for label in SYNTHETIC_CLASSES for i in range(per_class)]
    todo = [j for j in jobs if not (root / j[0] / f"{j[0]}_{j[1]:05d}.png").is_file()]
    for label in SYNTHETIC_CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        list(pool.map(_render, todo, chunksize=64))
    return root


class GpuSampler(threading.Thread):
    """Reads the GPU's utilisation once a second (NVML) until stopped: (wall time, percent)."""

    def __init__(self, index: int = 0):
        super().__init__(daemon=True)
        try:
            import pynvml  # nvidia-ml-py: comes with NVIDIA's CUDA images, needed only here

            pynvml.nvmlInit()
        except Exception as err:  # noqa: BLE001 - either way there is nothing to sample
            raise SystemExit(f"gpu-occupancy needs an NVIDIA GPU and nvidia-ml-py (pip install nvidia-ml-py): "
                             f"{type(err).__name__}: {err}") from None
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.name = pynvml.nvmlDeviceGetName(self._handle)
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            self.samples.append((time.time(), self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def stop(self) -> None:
        self._done.set()
        self.join()

    def busy(self, since: float) -> float:
        values = [u for t, u in self.samples if t >= since]
        return statistics.fmean(values) / 100 if values else float("nan")


def busy_by_slots(samples: list[tuple[float, int]], rows: list[dict], since: float, slots: int) -> dict:
    """The GPU's busy fraction split by whether every trial slot was taken at the sample's time:
    it tells a GPU that trials fill but cannot keep busy (their steps too small, their epochs
    broken by validation and checkpoints) from one left idle while the last trials finish."""
    full, short = [], []
    for t, percent in samples:
        if t >= since:
            running = sum(r["start"] <= t < r["end"] for r in rows)
            (full if running >= slots else short).append(percent / 100)
    share = len(full) / max(len(full) + len(short), 1)
    return {"share_of_time_all_slots_taken": round(share, 3),
            "gpu_busy_while_all_slots_taken": round(statistics.fmean(full), 3) if full else float("nan"),
            "gpu_busy_while_slots_idle": round(statistics.fmean(short), 3) if short else float("nan")}


def bench_gpu_occupancy(images: int, image_size: int, backbone: str, trials: int, epochs: int,
                        trials_per_gpu: int, workdir: str, overrides: list[str]) -> dict:
    workdir_ = Path(workdir).absolute()
    started = time.time()
    root = write_class_folder(workdir_ / f"cells-{image_size}px", images, image_size)
    print(f"{images} images at {image_size}px written in {time.time() - started:.0f}s", flush=True)
    cpus = max(1, (os.cpu_count() or trials_per_gpu) // trials_per_gpu)
    cfg = RunFolder.resolved(load(None, [
        f"name=occupancy-{backbone}-{time.strftime('%Y%m%d-%H%M%S')}", f"storage.path={workdir_}",
        "data.source=imagefolder", f"data.root={root}", f"data.image_size={image_size}",
        f"model.backbone={backbone}", f"train.epochs={epochs}", f"search.num_samples={trials}",
        "search.max_concurrent=auto", f"resources.gpus_per_worker={1 / trials_per_gpu}",
        f"resources.cpus_per_worker={cpus}", *overrides]))
    check_model_space(cfg)
    marks: dict[str, float] = {}

    def echo(message: str) -> None:
        if "data ready" in message:
            marks["data_ready"] = time.time()
        print(message, flush=True)

    clock = workdir_ / f"{cfg.name}.jsonl"
    sampler = GpuSampler()
    sampler.start()
    try:
        with ray_session():
            run_trials(cfg, prepare_data(cfg, echo), echo, callbacks=(TrialClock(str(clock)),))
    finally:
        ended = time.time()
        sampler.stop()
    folder = RunFolder.of(cfg)
    board = leaderboard.load(folder.uri())
    rows = read_clock(clock)
    # every second's utilisation, for plotting against the trials' start and end in the clock file
    clock.with_suffix(".gpu.json").write_text(json.dumps(sampler.samples))
    history = folder.read_frame(runfolder.HISTORY)
    wall = ended - marks["data_ready"]
    return {
        "gpu": sampler.name, "backbone": backbone, "images": images, "image_size": image_size,
        "batch_size": cfg.train.batch_size, "trials": len(board), "epochs_run": int(board["epochs_run"].sum()),
        "trials_per_gpu": trials_per_gpu,
        "search_seconds_after_data": round(wall, 1),
        "gpu_busy_fraction_after_data": round(sampler.busy(marks["data_ready"]), 3),
        **busy_by_slots(sampler.samples, rows, marks["data_ready"], min(trials_per_gpu, trials)),
        # Tune's view of each trial: start event to end event, minus the time inside its epochs
        "overhead_s_per_trial": round(statistics.fmean(r["overhead"] for r in rows), 2),
        # the same, counting process start-up and the gap until the next trial takes the slot
        "overhead_s_per_trial_search_level": round(overhead_per_trial(rows, wall, trials_per_gpu), 2),
        # mean seconds per trial in each phase (leuktune.training.phases), and from start to the loop
        **{f"phase_{phase}_s": round(statistics.fmean(r.get(phase, 0.0) for r in rows), 2)
           for phase in ("start_to_loop", *LOOP_PHASES, "last_report_to_end")},
        "first_epoch_images_per_s": round(float(history[history["epoch"] == 1]["train_images_per_s"].median()), 1),
        "median_train_images_per_s": round(float(history["train_images_per_s"].median()), 1),
        "best_val_balanced_accuracy": round(float(board["val_balanced_accuracy"].max()), 4),
    }
