"""Per-trial overhead: N short trials through the real search path (tuner, launcher, loop,
leaderboard) on the built-in set, against the same N as plain Tune function trials (the floor).

Overhead per trial = a trial's wall time minus the time inside its epochs, where a trial's wall
time is its share of the search's: wall x concurrency / N. That share counts what Tune's own
view of a trial (from its start event to its end) leaves out: starting its process before the
start event, and the gap until the next trial takes the slot. The loop's phase timings
(leuktune.training.phases) and Tune's events split the part Tune sees.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from ray import tune

from leuktune.config import load
from leuktune.models.space_check import check_model_space
from leuktune.runfolder import RunFolder
from leuktune.runtime import ray_session
from leuktune.tuning.driver import prepare_data, run_trials
from leuktune.training.phases import BACKGROUND_PHASES, PHASES

LOOP_PHASES = PHASES  # the phases timed inside the loop; the rest of a trial is start-up and shut-down


class TrialClock(tune.Callback):
    """Runs in the Tune driver: appends each trial's start, results and end (wall clock) to a file."""

    def __init__(self, path: str):
        self.path = path

    def _write(self, trial, event: str, **values) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"trial": trial.trial_id, "event": event, "t": time.time(), **values}) + "\n")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trial, "start")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        keep = ("epoch", "epoch_seconds", "loop_started_at", "launched_at")
        self._write(trial, "result", **{k: v for k, v in result.items() if k in keep or k.startswith("time_")})

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, "end")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, "error")


def per_trial(events: list[dict]) -> list[dict]:
    """Each trial's wall time, time inside epochs, and phases, from the clock's events."""
    trials: dict[str, dict] = {}
    for e in events:
        t = trials.setdefault(e["trial"], {"results": []})
        if e["event"] == "start":
            t.setdefault("start", e["t"])
        elif e["event"] == "result":
            t["results"].append(e)
        else:
            t["end"], t["failed"] = e["t"], e["event"] == "error"
    out = []
    for trial_id, t in trials.items():
        results = t["results"]
        if not results or "end" not in t:
            continue
        first, last = results[0], results[-1]
        inside = sum(r.get("epoch_seconds", 0.0) for r in results)
        row = {"trial": trial_id, "start": t["start"], "end": t["end"], "wall": t["end"] - t["start"],
               "inside_epochs": inside,
               "overhead": t["end"] - t["start"] - inside, "failed": t.get("failed", False)}
        if "loop_started_at" in first:
            row["start_to_loop"] = first["loop_started_at"] - t["start"]
            row["of_which_launch"] = first["loop_started_at"] - first["launched_at"]
            row.update({p: last.get(f"time_{p}_s", 0.0) for p in (*LOOP_PHASES, *BACKGROUND_PHASES)})
        row["last_report_to_end"] = t["end"] - last["t"]
        out.append(row)
    return out


def read_clock(path: Path) -> list[dict]:
    """Each trial's row (``per_trial``) from the file a ``TrialClock`` wrote."""
    return per_trial([json.loads(line) for line in path.read_text().splitlines()])


def _plain_trial(config: dict) -> None:
    for epoch in range(1, config["epochs"] + 1):
        tune.report({"epoch": epoch, "epoch_seconds": 0.0})


def plain_trials(trials: int, concurrent: int, epochs: int, workdir: Path) -> tuple[list[dict], float]:
    """The floor: plain Tune function trials that only report, same count, concurrency, CPUs."""
    clock = workdir / f"plain-{time.time_ns()}.jsonl"
    started = time.monotonic()
    tune.Tuner(tune.with_resources(_plain_trial, {"cpu": 1}),
               param_space={"epochs": epochs},
               tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=concurrent),
               run_config=tune.RunConfig(name="plain", storage_path=str(workdir), verbose=0,
                                         callbacks=[TrialClock(str(clock))])).fit()
    wall = time.monotonic() - started
    return read_clock(clock), wall


def leuktune_trials(trials: int, concurrent: int, epochs: int, launcher: str, workdir: Path,
                    overrides: list[str]) -> tuple[list[dict], float]:
    cfg = RunFolder.resolved(load(None, [
        f"storage.path={workdir}", f"name=overhead-{launcher}-{time.time_ns()}", f"search.num_samples={trials}",
        f"search.max_concurrent={concurrent}", f"train.epochs={epochs}", "search.scheduler.asha=null",
        f"resources.launcher={launcher}", *overrides]))
    check_model_space(cfg)
    clock = workdir / f"{cfg.name}.jsonl"
    quiet = lambda message: None  # noqa: E731
    data = prepare_data(cfg, quiet)
    run_trials(cfg, data, quiet)  # untimed: warms Ray's workers and the imports
    started = time.monotonic()
    results = run_trials(cfg.model_copy(update={"name": cfg.name + "-timed"}), data, quiet,
                         callbacks=(TrialClock(str(clock)),))
    wall = time.monotonic() - started
    if results.errors:
        raise results.errors[0]
    return read_clock(clock), wall


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return statistics.fmean(values) if values else float("nan")


def overhead_per_trial(rows: list[dict], wall: float, concurrent: int) -> float:
    """(search wall x concurrency - time inside epochs) / trials."""
    return (wall * concurrent - sum(r["inside_epochs"] for r in rows)) / max(len(rows), 1)


def bench_trial_overhead(trials: int, concurrent: int, epochs: int, launcher: str, workdir: str,
                         overrides: list[str]) -> None:
    workdir_ = Path(workdir).absolute()
    workdir_.mkdir(parents=True, exist_ok=True)
    with ray_session(logging_level="ERROR"):
        ours, ours_wall = leuktune_trials(trials, concurrent, epochs, launcher, workdir_, overrides)
        floor, floor_wall = plain_trials(trials, concurrent, epochs, workdir_)
    print(f"\n{trials} trials, {concurrent} at a time, {epochs} epoch(s) each, launcher {launcher}")
    print(f"search wall time {ours_wall:.1f} s (the same trials as plain Tune trials: {floor_wall:.1f} s)\n")
    print("mean seconds per trial (and share of it), from Tune's start event to its end event:")
    phases = ["start_to_loop", "of_which_launch", *LOOP_PHASES, "last_report_to_end", "inside_epochs", "wall"]
    wall = _mean(ours, "wall")
    for phase in phases:
        print(f"  {phase:<20} {_mean(ours, phase):8.2f}  {100 * _mean(ours, phase) / wall:5.1f}%")
    for phase in BACKGROUND_PHASES:
        print(f"  {phase:<20} {_mean(ours, phase):8.2f}          (the write itself: beside validate on a GPU, within checkpoint on the CPU)")
    print(f"  {'outside that view':<20} {ours_wall * concurrent / max(len(ours), 1) - _mean(ours, 'wall'):8.2f}"
          "   (process start before the start event, gaps between trials)")
    print(f"trial overhead: {overhead_per_trial(ours, ours_wall, concurrent):.1f} s per trial "
          f"(floor {overhead_per_trial(floor, floor_wall, concurrent):.1f} s)")
