"""Where else a search's trials are followed while it runs: MLflow (``tracking.mlflow``: one MLflow
run per trial, under an experiment of the experiment's name) and TensorBoard (``tracking.tensorboard``:
event files per trial under ``<run>/tensorboard/<trial_id>``).

Each is a follower of the search's records (leuktune.tuning.callback hands them over): a trial's
start with its drawn parameters, each validated epoch (``EpochReport``), its end (``TrialRecord``:
status, kept epoch, checkpoint); the final evaluation adds each scored trial's test figures. A
follower that fails mid-search is reported and the search goes on: only ``check``, before any trial,
stops a search for an unreachable server.

>>> from leuktune.config import load
>>> followers(load(None, ["tracking.tensorboard=false"]), None)
[]
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import TYPE_CHECKING, Any, Mapping

from leuktune import runfolder
from leuktune.config import ConfigError, ExperimentConfig
from leuktune.errors import LeuktuneError
from leuktune.metrics import METRICS
from leuktune.results import EpochReport, TrialRecord, TrialStatus

if TYPE_CHECKING:
    from leuktune.runfolder import RunFolder

TRIAL_TAG = "leuktune.trial_id"  # each MLflow run's Tune trial id, how a later stage finds it
# MLflow's end state of a trial: ASHA's and patience's stops are kills of a run that was going well enough
MLFLOW_STATUS = {TrialStatus.COMPLETED: "FINISHED", TrialStatus.STOPPED_EARLY: "KILLED",
                 TrialStatus.DIVERGED: "FAILED", TrialStatus.ERROR: "FAILED"}


class TrackingError(LeuktuneError, RuntimeError):
    """A tracking server that cannot be reached, naming it."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_metrics(report: EpochReport) -> dict[str, float]:
    """What a tracker plots of an epoch: every validation metric, the training loss, the learning rate."""
    values = {f"val_{m}": report.val.get(m) for m in METRICS}
    values.update(train_loss=report.train_loss, lr=report.lr, train_images_per_s=report.train_images_per_s)
    return {name: float(value) for name, value in values.items() if _number(value)}


class MLflowTrials:
    """One MLflow run per trial of an experiment, on a tracking server (MLflow's client API)."""

    def __init__(self, uri: str, experiment: str, run_location: str | None = None):
        self.uri, self.experiment, self.run_location = uri, experiment, run_location
        self._runs: dict[str, str] = {}
        self._connected = None
        self._connect()  # now: a server that does not answer stops the search before any trial

    def __getstate__(self) -> dict:  # Tune pickles its callbacks: the connection is made again where they run
        return {**self.__dict__, "_connected": None, "_runs": {}}

    def _connect(self):
        """(MLflow's client, the experiment's id), made once."""
        if self._connected is None:
            try:
                # MLflow is an optional extra: only a search that tracks to it needs it
                from mlflow.tracking import MlflowClient
            except ImportError:
                raise ConfigError(f"tracking.mlflow {self.uri}: MLflow is not installed; "
                                  "pip install 'leuktune[mlflow]'") from None
            client = MlflowClient(tracking_uri=self.uri)
            try:
                with _one_try():
                    found = client.get_experiment_by_name(self.experiment)
                experiment_id = found.experiment_id if found else client.create_experiment(self.experiment)
            except Exception as err:  # noqa: BLE001 - MLflow's errors for an unreachable server vary by transport
                raise TrackingError(f"tracking.mlflow {self.uri}: cannot reach the MLflow tracking server "
                                    f"({type(err).__name__}: {str(err).splitlines()[0][:300]})") from None
            self._connected = (client, experiment_id)
        return self._connected

    @property
    def client(self):
        return self._connect()[0]

    @property
    def experiment_id(self) -> str:
        return self._connect()[1]

    def run_of(self, trial_id: str) -> str | None:
        """The MLflow run of a trial (one an earlier session of a resumed search started included)."""
        if trial_id not in self._runs:
            found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'",
                                            max_results=1)
            if found:
                self._runs[trial_id] = found[0].info.run_id
        return self._runs.get(trial_id)

    def trial_started(self, trial_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param  # with the client (see __init__)

        if self.run_of(trial_id):
            self.client.update_run(self._runs[trial_id], status="RUNNING")
            return
        tags = {TRIAL_TAG: trial_id, **({"leuktune.run": self.run_location} if self.run_location else {})}
        run = self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags)
        self._runs[trial_id] = run.info.run_id
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def epoch(self, trial_id: str, report: EpochReport) -> None:
        from mlflow.entities import Metric  # with the client (see __init__)

        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, report.epoch) for name, value in epoch_metrics(report).items()]
        if self.run_of(trial_id):
            self.client.log_batch(self._runs[trial_id], metrics=metrics)

    def trial_ended(self, record: TrialRecord) -> None:
        run_id = self.run_of(record.trial_id)
        if not run_id:
            return
        self.client.set_tag(run_id, "leuktune.status", record.status.value)
        if record.checkpoint:
            self.client.set_tag(run_id, "leuktune.checkpoint", record.checkpoint)
        if record.kept:
            self.client.log_metric(run_id, "kept_epoch", record.kept.epoch)
        self.client.set_terminated(run_id, status=MLFLOW_STATUS[record.status])

    def test_figures(self, trial_id: str, figures: Mapping[str, Any]) -> None:
        """The final evaluation's figures of a trial (``test_*``, its temperature) on the trial's run."""
        from mlflow.entities import Metric  # with the client (see __init__)

        run_id = self.run_of(trial_id)
        if run_id:
            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in figures.items()
                                                   if (k.startswith("test_") or k == "temperature") and _number(v)])

    def close(self) -> None:
        pass


class TensorBoardTrials:
    """Event files per trial under ``<run>/tensorboard/<trial_id>``, written by tensorboardX (which
    Ray Tune brings). A bucket run's are written on the driver's disk and copied up after each epoch."""

    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.root = str(folder.on_this_disk / runfolder.TENSORBOARD)
        self._writers: dict[str, Any] = {}

    def __getstate__(self) -> dict:  # Tune pickles its callbacks: writers are opened again where they run
        return {**self.__dict__, "_writers": {}}

    def _writer(self, trial_id: str):
        if trial_id not in self._writers:
            from tensorboardX import SummaryWriter  # only a search that writes event files needs it

            self._writers[trial_id] = SummaryWriter(os.path.join(self.root, trial_id))
        return self._writers[trial_id]

    def trial_started(self, trial_id: str, params: Mapping[str, Any]) -> None:
        self._writer(trial_id).add_text("params", "\n".join(f"- {k}: {v}" for k, v in params.items()), 0)

    def epoch(self, trial_id: str, report: EpochReport) -> None:
        writer = self._writer(trial_id)
        for name, value in epoch_metrics(report).items():
            # grouped as TensorBoard shows them: val/balanced_accuracy, train/loss, train/lr
            writer.add_scalar("train/lr" if name == "lr" else name.replace("_", "/", 1), value, report.epoch)
        writer.flush()
        self._upload(trial_id)

    def trial_ended(self, record: TrialRecord) -> None:
        writer = self._writers.pop(record.trial_id, None)
        if writer is not None:
            writer.add_text("status", f"{record.status.value}; checkpoint {record.checkpoint}", 0)
            writer.close()
            self._upload(record.trial_id)

    def _upload(self, trial_id: str) -> None:
        if self.folder.local:
            return
        local = os.path.join(self.root, trial_id)
        for name in os.listdir(local):
            with open(os.path.join(local, name), "rb") as f:
                self.folder.write_bytes(f"{runfolder.TENSORBOARD}/{trial_id}/{name}", f.read())

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


@contextlib.contextmanager
def _one_try():
    """MLflow's client retries a request for minutes with backoff; whether a server answers is asked once."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="15")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def followers(cfg: ExperimentConfig, folder: RunFolder | None) -> list:
    """The trackers ``cfg.tracking`` asks for, each reached once (a ``TrackingError`` or ``ConfigError``
    here, before any trial, names a server that does not answer or MLflow not installed)."""
    found: list = []
    if cfg.tracking.mlflow:
        found.append(MLflowTrials(cfg.tracking.mlflow, cfg.name, folder.uri() if folder else None))
    if cfg.tracking.tensorboard and folder is not None:
        found.append(TensorBoardTrials(folder))
    return found


def record_test_figures(cfg: ExperimentConfig, rows: list[Mapping[str, Any]], echo=print) -> None:
    """The final evaluation's figures of each scored trial onto its MLflow run. A follower's
    failure is a warning, whatever raised it (a server gone since the search, or one that refuses
    a request): the figures stay in the run folder."""
    if not cfg.tracking.mlflow:
        return
    try:
        trials = MLflowTrials(cfg.tracking.mlflow, cfg.name)
        for row in rows:
            trials.test_figures(row["trial_id"], row)
    except LeuktuneError as err:
        echo(f"[leuktune] WARNING: test figures not sent to MLflow: {err}")
    except Exception as err:  # noqa: BLE001 - MLflow's errors vary by server and transport: a warning too
        first = str(err).splitlines()[0][:300] if str(err) else ""
        echo(f"[leuktune] WARNING: test figures not sent to MLflow {cfg.tracking.mlflow} ({type(err).__name__}: "
             f"{first}); they are in the run folder's test.parquet")
