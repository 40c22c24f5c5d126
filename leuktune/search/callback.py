"""Tune's per-trial results -> leaderboard and history rows, written as each trial ends,
and one progress line per trial-epoch on the console.

The callback runs in the driver, so the leaderboard is complete up to the last finished
trial whenever the search stops.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any

import ray.cloudpickle
from ray import tune

import leuktune
from leuktune import leaderboard, runfolder
from leuktune.config import ExperimentConfig
from leuktune.metrics import METRICS
from leuktune.runfolder import RunFolder
from leuktune.train.trainer import checkpoint_uri

# Per-epoch values kept in history.parquet, besides the val_* metrics.
HISTORY_KEYS = ["epoch", "train_loss", "train_images_per_s", "epoch_seconds", "lr", "resumed_from_epoch",
                "val_confusion_matrix"]
# Facts about the model and device that every epoch reports; the leaderboard keeps the last.
MODEL_KEYS = ["params", "trainable_params", "unfreeze_depth_effective", "stage_groups", "backbone_activation",
              "workers", "precision", "device"]


def echo(message: str) -> None:
    print(message, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def describe_error(trial) -> str:
    """The failed trial's exception as ``Type: message`` (its first lines). Ray wraps it:
    the user's exception is the cause of a task error; a dead process is its own error."""
    try:
        with open(trial.pickled_error_file, "rb") as f:
            error = ray.cloudpickle.load(f)
        error = getattr(error, "cause", None) or error
        text = f"{type(error).__name__}: {error}"
    except Exception:  # noqa: BLE001 - no pickled error: Ray's text file says what it knows
        try:
            with open(trial.error_file) as f:
                text = f.read()
        except (OSError, TypeError):
            text = "the trial failed; Ray recorded no error"
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return "\n".join(lines[:5])


class LeaderboardCallback(tune.Callback):
    """Turns Tune's per-trial results into leaderboard and history rows."""

    def __init__(self, cfg: ExperimentConfig, folder: RunFolder, data_fingerprint: str, echo=echo):
        self.cfg = cfg
        self.folder = folder
        self.fingerprint = data_fingerprint
        self.hyperparameters = list(cfg.searched())
        self.echo = echo
        self._results: dict[str, list[dict]] = {}
        self._pending: dict[str, list[dict]] = {runfolder.LEADERBOARD: [], runfolder.HISTORY: []}
        self._started: dict[str, tuple[str, float]] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.setdefault(trial.trial_id, (_now(), time.monotonic()))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        results = self._results.setdefault(trial.trial_id, [])
        # A trial restarted from an earlier checkpoint reports some epochs again;
        # the new reports replace the old ones.
        results[:] = [r for r in results if r.get("epoch", 0) < result.get("epoch", 0)]
        results.append({**result, "checkpoint_uri": checkpoint_uri(trial, result)})
        metric = self.cfg.search.metric
        if metric in result:
            self.echo(f"[leuktune] trial {trial.trial_id} epoch {result.get('epoch')}/{self.cfg.train.epochs}: "
                      f"{metric}={result[metric]:.4f} train_loss={result.get('train_loss', math.nan):.4f} "
                      f"({result.get('train_images_per_s', math.nan):.0f} img/s)")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, error=describe_error(trial))

    def _status(self, results: list[dict], error: str | None) -> tuple[str, str | None]:
        """(status, stopped_by): error, completed, or stopped_early by asha or patience."""
        if error:
            return "error", None
        if max((r["epoch"] for r in results), default=0) >= self.cfg.train.epochs:
            return "completed", None
        return "stopped_early", "patience" if results and results[-1].get("early_stopped") else "asha"

    def _finish(self, trial, error: str | None) -> None:
        results = self._results.pop(trial.trial_id, [])
        started_at, t0 = self._started.pop(trial.trial_id, (None, time.monotonic()))
        # The loop decides what is best (it marks each new best with improved_epoch and
        # checkpoints it); the last such epoch is the trial's best, and Ray keeps its checkpoint.
        best = next((r for r in reversed(results) if r.get("improved_epoch")), {})
        last = results[-1] if results else {}
        status, stopped_by = self._status(results, error)
        row = {
            "experiment": self.cfg.name, "trial_id": trial.trial_id, "status": status,
            **{k: trial.config.get(k) for k in self.hyperparameters},
            "best_epoch": best.get("epoch"), "epochs_run": max((r["epoch"] for r in results), default=0),
            "stopped_by": stopped_by,
            **{f"val_{m}": best.get(f"val_{m}") for m in METRICS},
            "val_confusion_matrix": best.get("val_confusion_matrix"),
            **{k: last.get(k) for k in MODEL_KEYS},
            "train_seconds": round(time.monotonic() - t0, 2),
            "checkpoint_uri": best.get("checkpoint_uri"),
            "started_at": started_at, "finished_at": _now(),
            "leuktune_version": leuktune.__version__, "data_fingerprint": self.fingerprint,
            "error": error, "error_file": trial.error_file if error else None,
        }
        self._pending[runfolder.LEADERBOARD].append(leaderboard.order_columns(row, self.hyperparameters))
        self._pending[runfolder.HISTORY].extend(
            {"experiment": self.cfg.name, "trial_id": trial.trial_id,
             **{k: r.get(k) for k in HISTORY_KEYS}, **{f"val_{m}": r.get(f"val_{m}") for m in METRICS}}
            for r in results)
        self._flush()
        drawn = " ".join(f"{k}={_short(trial.config.get(k))}" for k in self.hyperparameters if k in trial.config)
        metric = self.cfg.search.metric
        score = f"{metric}={best[metric]:.4f}" if best else "no metrics"
        reason = f": {error.splitlines()[0]}" if error else ""
        self.echo(f"[leuktune] trial {trial.trial_id} {status} after {row['epochs_run']} epoch(s): {score}  "
                  f"{drawn}{reason}")

    def _flush(self) -> None:
        """Write pending rows; a failed write (full disk, bad value) must not end the search,
        so the rows stay pending and are tried again when the next trial ends."""
        for name, rows in self._pending.items():
            if not rows:
                continue
            try:
                leaderboard.append(self.folder / name, rows)
                rows.clear()
            except Exception as err:  # noqa: BLE001 - reported, kept, retried
                self.echo(f"[leuktune] WARNING: could not write {self.folder / name} ({type(err).__name__}: "
                          f"{err}); {len(rows)} row(s) kept and retried after the next trial")

    def on_experiment_end(self, trials, **info):
        self._flush()
