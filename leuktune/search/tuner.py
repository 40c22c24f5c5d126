"""Ray Tune over trials: Optuna proposes, ASHA stops weak trials, each trial is a TorchTrainer.

The leaderboard is written by a Tune callback in the driver process, as each trial
ends, so it is complete up to the last finished trial whenever the search stops.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

import leuktune
from leuktune import leaderboard
from leuktune.config import METRICS, ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.search.space import DefineByRun
from leuktune.train.trainer import make_trainer

# Per-epoch values kept in history.parquet, besides the val_* metrics.
_HISTORY_KEYS = ["epoch", "train_loss", "train_images_per_s", "epoch_seconds", "lr", "resumed_from_epoch",
                 "val_confusion_matrix"]


def run_trial(params: dict[str, Any], experiment: ExperimentConfig, data: CachedDataset, trials_path: str) -> None:
    """The Tune function trainable: draw -> concrete config -> fit one TorchTrainer."""
    cfg = experiment.with_params(params)
    trial_id = tune.get_context().get_trial_id()
    make_trainer(cfg, data, trials_path, name=trial_id, callbacks=[TuneReportCallback()]).fit()


def _echo(message: str) -> None:
    print(message, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LeaderboardCallback(tune.Callback):
    """Turns Tune's per-trial results into leaderboard and history rows."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, data_fingerprint: str, echo=_echo):
        self.cfg = cfg
        self.run_dir = run_dir
        self.fingerprint = data_fingerprint
        self.hyperparameters = list(cfg.searched())
        self.echo = echo
        self._results: dict[str, list[dict]] = {}
        self._pending: dict[str, list[dict]] = {leaderboard.LEADERBOARD: [], leaderboard.HISTORY: []}
        self._started: dict[str, tuple[str, float]] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = (_now(), time.monotonic())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        results = self._results.setdefault(trial.trial_id, [])
        # A worker group restarted from an earlier checkpoint reports some epochs again;
        # the new reports replace the old ones.
        results[:] = [r for r in results if r.get("epoch", 0) < result.get("epoch", 0)]
        results.append(dict(result))
        metric = self.cfg.search.metric
        if metric in result:
            self.echo(f"[leuktune] trial {trial.trial_id} epoch {result.get('epoch')}/{self.cfg.train.epochs}: "
                      f"{metric}={result[metric]:.4f} train_loss={result.get('train_loss', math.nan):.4f} "
                      f"({result.get('train_images_per_s', math.nan):.0f} img/s)")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, error=str(getattr(trial, "error_file", None) or "trial failed"))

    def _finish(self, trial, error: str | None) -> None:
        results = self._results.pop(trial.trial_id, [])
        started_at, t0 = self._started.pop(trial.trial_id, (None, time.monotonic()))
        metric = self.cfg.search.metric
        # The loop decides what is best (it marks each new best with improved_epoch and
        # checkpoints it); the last such epoch is the trial's best, and Ray keeps its checkpoint.
        best = next((r for r in reversed(results) if r.get("improved_epoch")), {})
        checkpoint = best.get(CHECKPOINT_PATH_KEY)
        epochs_run = max((r["epoch"] for r in results), default=0)
        last = results[-1] if results else {}
        stopped_by = None
        if error:
            status = "error"
        elif epochs_run < self.cfg.train.epochs:
            status = "stopped_early"
            stopped_by = "patience" if last.get("early_stopped") else "asha"
        else:
            status = "completed"
        row = {
            "experiment": self.cfg.name,
            "trial_id": trial.trial_id,
            "status": status,
            **{k: trial.config.get(k) for k in self.hyperparameters},
            "best_epoch": best.get("epoch"),
            "epochs_run": epochs_run,
            "stopped_by": stopped_by,
            **{f"val_{m}": best.get(f"val_{m}") for m in METRICS},
            "val_confusion_matrix": best.get("val_confusion_matrix"),
            **{k: last.get(k) for k in ("params", "trainable_params", "unfreeze_depth_effective", "stage_groups",
                                        "backbone_activation", "workers", "precision")},
            "train_seconds": round(time.monotonic() - t0, 2),
            "device": last.get("device"),
            "checkpoint_uri": checkpoint,
            "started_at": started_at,
            "finished_at": _now(),
            "leuktune_version": leuktune.__version__,
            "data_fingerprint": self.fingerprint,
            "error": error,
        }
        self._pending[leaderboard.LEADERBOARD].append(leaderboard.order_columns(row, self.hyperparameters))
        self._pending[leaderboard.HISTORY].extend(
            {"experiment": self.cfg.name, "trial_id": trial.trial_id,
             **{k: r.get(k) for k in _HISTORY_KEYS}, **{f"val_{m}": r.get(f"val_{m}") for m in METRICS}}
            for r in results
        )
        self._flush()
        drawn = " ".join(f"{k}={_short(trial.config.get(k))}" for k in self.hyperparameters)
        score = f"{metric}={best[metric]:.4f}" if best else "no metrics"
        self.echo(f"[leuktune] trial {trial.trial_id} {status} after {epochs_run} epoch(s): {score}  {drawn}")

    def _flush(self) -> None:
        """Write pending rows; a failed write (full disk, bad value) must not end the search,
        so the rows stay pending and are tried again when the next trial ends."""
        for name, rows in self._pending.items():
            if not rows:
                continue
            try:
                leaderboard.append(self.run_dir / name, rows)
                rows.clear()
            except Exception as err:  # noqa: BLE001 - reported, kept, retried
                self.echo(f"[leuktune] WARNING: could not write {self.run_dir / name} ({type(err).__name__}: "
                          f"{err}); {len(rows)} row(s) kept and retried after the next trial")

    def on_experiment_end(self, trials, **info):
        self._flush()


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def build_tuner(cfg: ExperimentConfig, data: CachedDataset, run_dir: Path, echo=_echo) -> tune.Tuner:
    search = cfg.search
    sampler = (optuna.samplers.TPESampler(seed=search.searcher.optuna.seed)
               if search.searcher.optuna.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=search.searcher.optuna.seed))
    searcher = OptunaSearch(space=DefineByRun(cfg), metric=search.metric, mode=search.mode, sampler=sampler)
    asha = search.scheduler.asha
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs,
                               grace_period=min(asha.grace_period, cfg.train.epochs),
                               reduction_factor=asha.reduction_factor)
                 if asha else FIFOScheduler())
    trainable = tune.with_parameters(run_trial, experiment=cfg, data=data, trials_path=str(run_dir / "trials"))
    # The trial function only drives a TorchTrainer whose workers hold the real
    # resources. It asks for no CPU, so N cores run N one-core workers (a 0.01-CPU
    # driver leaves 1.98 of 2 cores and the second trial's workers never start);
    # Tune refuses an all-zero request, hence the token byte of memory.
    trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 1})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=search.metric, mode=search.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=search.num_samples, max_concurrent_trials=search.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(run_dir),
            callbacks=[LeaderboardCallback(cfg, run_dir, data.fingerprint, echo=echo)],
            verbose=1,
        ),
    )
