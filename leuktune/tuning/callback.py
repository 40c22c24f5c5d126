"""Tune's per-trial results -> the search's tables (``trials.parquet``, ``history.parquet``,
``sites.parquet`` under search.cv: sites, and the leaderboard derived from them), one progress
line per trial-epoch on the console, and the same records to whatever follows the search (the
study's user attributes, MLflow, TensorBoard).

The callback runs in the driver. Each epoch's row is stored at once in the trial's own small
file (``history/<trial>.parquet``), so a search whose driver dies loses nothing a resumed search
needs; when the trial ends its rows join ``history.parquet`` and its row the leaderboard, so
the leaderboard is complete up to the last finished trial whenever the search stops.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

import pandas as pd
import ray.cloudpickle
from ray import tune

import leuktune
from leuktune import leaderboard, runfolder
from leuktune.config import ExperimentConfig
from leuktune.config.search import SITES as CV_SITES
from leuktune.results import EpochReport, TrialRecord, TrialStatus
from leuktune.runfolder import RunFolder
from leuktune.runtime import echo
from leuktune.training.checkpoint import read_val_predictions
from leuktune.training.trainer import find_checkpoint, trial_share


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

    def __init__(self, cfg: ExperimentConfig, folder: RunFolder, data_fingerprint: str, echo=echo,
                 study_notes: Callable[..., None] | None = None, followers: list | None = None):
        """``study_notes(trial_id, **attributes)`` sets user attributes of the trial in the search's
        study (its node, its kept checkpoint); ``followers`` (leuktune.tracking) get each trial's
        start, epochs and end."""
        self.cfg = cfg
        self.study_notes = study_notes
        self.followers = followers or []
        self.folder = folder
        self.fingerprint = data_fingerprint
        self.hyperparameters = list(cfg.searched())
        self.echo = echo
        self._results: dict[str, list[EpochReport]] = {}
        self._started: dict[str, tuple[str, float]] = {}
        self._unwritten: list[tuple[dict, list[EpochReport], str]] = []
        self._share = trial_share(cfg)
        # each ended trial's search metric on the shared bootstrap resamples of its validation
        # images (None: its checkpoint keeps no predictions), read once: what ties are judged by
        self._resampled: dict[str, leaderboard.Resampled | None] = {}
        self._announced: set[str] = set()  # trials whose first line (with the weights they loaded) was shown

    def _history_of(self, trial_id: str) -> list[EpochReport]:
        """The epochs a trial reported so far, those of an earlier session of the search included."""
        if trial_id not in self._results:
            part = runfolder.history_part(trial_id)
            # an earlier release's part (a search resumed after an upgrade) under today's names
            rows = leaderboard.read_renamed(self.folder, part).to_dict("records")
            self._results[trial_id] = leaderboard.held_out.reports(rows)  # a held-out site's rows join their epoch
        return self._results[trial_id]

    def _history_rows(self, trial_id: str, reports: list[EpochReport]) -> list[dict]:
        base = {"experiment": self.cfg.name, "trial_id": trial_id}
        return [row for r in reports for row in leaderboard.held_out.history_rows(base, r)]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.setdefault(trial.trial_id, (_now(), time.monotonic()))
        drawn = {k: trial.config.get(k) for k in self.hyperparameters if k in trial.config}
        self._tell_followers("trial_started", trial.trial_id, drawn)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        report = EpochReport.from_result(result)
        results = self._history_of(trial.trial_id)
        # A trial restarted from an earlier checkpoint reports some epochs again;
        # the new reports replace the old ones.
        results[:] = [r for r in results if r.epoch < report.epoch]
        results.append(report)
        try:  # the whole part each time: an epoch missed here is written with the next one
            self.folder.write_table(runfolder.history_part(trial.trial_id), leaderboard.table(
                self._history_rows(trial.trial_id, results), leaderboard.HISTORY))
        except Exception as err:  # noqa: BLE001 - reported; the trial goes on
            self._warn(f"could not store epoch {report.epoch} of trial {trial.trial_id}", err,
                       "tried again with its next epoch or when it ends")
        self._tell_followers("epoch", trial.trial_id, report)
        if self.study_notes is not None:
            # the study says where a trial runs and where its kept checkpoint is, as the leaderboard will
            kept = find_checkpoint(self.cfg, self.folder, trial.path, trial.trial_id, report.newly_kept_epoch) \
                if report.newly_kept_epoch else None
            self._note(trial.trial_id, node=result.get("node_ip"), checkpoint=self.folder.relative(kept))
        if report.checkpoint_error:
            self.echo(f"[leuktune] WARNING: trial {trial.trial_id} could not write its checkpoint of epoch "
                      f"{report.epoch} ({report.checkpoint_error}); it goes on, resumable from its last checkpoint")
        metric = self.cfg.search.metric
        weights = ""
        if trial.trial_id not in self._announced and report.facts is not None:
            self._announced.add(trial.trial_id)
            weights = f" weights: {report.facts.backbone_weights}"
        self.echo(f"[leuktune] trial {trial.trial_id} epoch {report.epoch}/{self.cfg.train.epochs}: "
                  f"{metric}={report.value(metric):.4f} train_loss={report.train_loss:.4f} "
                  f"({report.train_images_per_s:.0f} img/s){weights}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, error=describe_error(trial))

    def _finish(self, trial, error: str | None) -> None:
        results = self._history_of(trial.trial_id)
        self._results.pop(trial.trial_id)
        started_at, t0 = self._started.pop(trial.trial_id, (None, time.monotonic()))
        # The loop decides which epoch is kept (train.keep: it marks each newly kept epoch with
        # newly_kept_epoch and checkpoints it); the last such epoch is the trial's kept one, and Ray
        # keeps its checkpoint.
        kept = next((r for r in reversed(results) if r.newly_kept_epoch), None)
        last = results[-1] if results else None
        status, stopped_by = TrialStatus.of(last, self.cfg.train.epochs, error)
        seconds = round(time.monotonic() - t0, 2)
        record = TrialRecord(
            experiment=self.cfg.name, trial_id=trial.trial_id, status=status, stopped_by=stopped_by,
            drawn={k: trial.config.get(k) for k in self.hyperparameters}, kept=kept, last=last,
            train_seconds=seconds, cpu_seconds=seconds * self._share["CPU"], gpu_seconds=seconds * self._share["GPU"],
            # relative to the run folder: a copy of the run finds it where the copy is
            checkpoint=self.folder.relative(find_checkpoint(self.cfg, self.folder, trial.path, trial.trial_id,
                                                            kept.epoch if kept else None)),
            started_at=started_at, finished_at=_now(), leuktune_version=leuktune.__version__,
            data_fingerprint=self.fingerprint, error=error, error_file=trial.error_file if error else None)
        row = record.to_row()
        self._announced.discard(trial.trial_id)
        self._resampled[trial.trial_id] = self._draws(record.checkpoint)
        self._write(row, results, trial.trial_id)
        self._tell_followers("trial_ended", record)
        drawn = " ".join(f"{k}={_short(trial.config.get(k))}" for k in self.hyperparameters if k in trial.config)
        metric = self.cfg.search.metric
        score = f"{metric}={kept.value(metric):.4f}" if kept else "no metrics"
        reason = f": {error.splitlines()[0]}" if error else ""
        self.echo(f"[leuktune] trial {trial.trial_id} {status.value} after {row['epochs_run']} epoch(s): {score}  "
                  f"{drawn}{reason}")

    def _write(self, row: dict, results: list[EpochReport], trial_id: str) -> None:
        """The trial's epochs into the history, then its row into the leaderboard (the Pareto
        front recomputed): a trial on the leaderboard has its whole history. A trial already on
        the leaderboard (a resumed search can see a trial end again that an earlier session
        recorded) keeps its row and history. A failed read or write (full disk, lost bucket) is
        reported and must not end the search: the rows wait and are written with the next
        trial's (its epochs stay in its own file)."""
        self._unwritten.append((row, results, trial_id))
        try:
            board = leaderboard.trials(self.folder)
            recorded = set(board["trial_id"]) if len(board) else set()
            new = [(r, rs, t) for r, rs, t in self._unwritten if t not in recorded]
            # Replacing the trials' rows, not adding: a retry after a failed leaderboard write
            # writes the same epochs again.
            leaderboard.append(self.folder, runfolder.HISTORY,
                               [row for _, rs, t in new for row in self._history_rows(t, rs)],
                               leaderboard.HISTORY, replacing=[t for _, _, t in new])
            if self.cfg.search.cv == CV_SITES:  # each held-out site's figures at the trial's kept epoch
                held = [row for _, rs, t in new for row in leaderboard.held_out.kept_rows(self.cfg.name, t, rs)]
                leaderboard.append(self.folder, runfolder.SITES, held, leaderboard.SITES,
                                   replacing=[t for _, _, t in new])
            board = pd.concat([board, pd.DataFrame([r for r, _, _ in new])], ignore_index=True)
            search = self.cfg.search
            for other, checkpoint in zip(board["trial_id"], board["checkpoint"]):
                if other not in self._resampled:  # a trial of an earlier session of the search: read once
                    self._resampled[other] = self._draws(checkpoint)
            tie_columns = leaderboard.ties(board, search.metric, search.mode, self._resampled)
            board[list(tie_columns.columns)] = tie_columns
            if search.objectives:
                board["pareto_front"] = leaderboard.pareto_front(board, list(search.objectives), search.directions)
            self.folder.write_table(runfolder.TRIALS_TABLE, leaderboard.table(
                board.to_dict("records"), leaderboard.trials_schema(self.hyperparameters)))
            leaderboard.write(self.folder)
            for _, _, t in self._unwritten:
                self.folder.remove(runfolder.history_part(t))
            self._unwritten.clear()
        except Exception as err:  # noqa: BLE001 - reported; the search goes on
            self._warn(f"could not record trial {trial_id}", err, "tried again when the next trial ends")

    def _draws(self, checkpoint: str | None) -> leaderboard.Resampled | None:
        """The search metric of a trial's kept epoch on the shared resamples of its validation
        images, from the predictions its checkpoint keeps (relative to the run); None without them."""
        location = self.folder.located(checkpoint) if isinstance(checkpoint, str) else None
        if location is None:
            return None
        try:
            folds = read_val_predictions(location)
        except Exception as err:  # noqa: BLE001 - reported; the trial is judged by the band instead
            self._warn(f"could not read the validation predictions of {checkpoint}", err,
                       "its tie with the top is judged by the top's standard error")
            return None
        return None if folds is None else leaderboard.resample(folds, self.cfg.search.metric)

    def _note(self, trial_id: str, /, **attributes) -> None:
        try:
            self.study_notes(trial_id, **attributes)
        except Exception as err:  # noqa: BLE001 - reported; the trial goes on
            self._warn(f"could not note {', '.join(attributes)} of trial {trial_id} in the study", err,
                       "noted again with its next epoch")

    def _tell_followers(self, event: str, *args) -> None:
        for follower in self.followers:
            try:
                getattr(follower, event)(*args)
            except Exception as err:  # noqa: BLE001 - a tracker down mid-search must not end it
                self.echo(f"[leuktune] WARNING: {type(follower).__name__} missed a trial's {event.replace('_', ' ')} "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the search goes on")

    def on_experiment_end(self, trials, **info):
        for follower in self.followers:
            follower.close()

    def _warn(self, what: str, err: Exception, then: str) -> None:
        self.echo(f"[leuktune] WARNING: {what} in {self.folder.uri()} ({type(err).__name__}: {err}); {then}")
