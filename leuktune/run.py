"""A search's run, as one object: ``leuktune.Run.open(path_or_uri)`` and its verbs.

A run folder travels. Synced down from its bucket to a laptop, moved, or handed to a colleague
and the original removed, it opens where it is now: every location its tables hold is relative
to it, the data is read back from its saved split, and the verbs write only inside it (and into
this machine's cache of decoded images). Reads (``leaderboard``, ``history``, ``model``,
``predict``) write nothing; ``evaluate``, ``report`` and ``export`` add their own files to it.

>>> run = leuktune.Run.open("runs/synthetic-default")  # doctest: +SKIP
>>> run.leaderboard().head(3)  # doctest: +SKIP
>>> model = run.model()  # the best trial; run.model(trial="ensemble"): the weighted ensemble  # doctest: +SKIP
>>> run.predict(["cells/a.png"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from leuktune import leaderboard
from leuktune.config import ConfigError, ExperimentConfig
from leuktune.leaderboard import ENSEMBLE_ID
from leuktune.runfolder import RunFolder


class Run:
    """One run folder (``<storage.path>/<name>``, local, NFS or a bucket) and what can be done with it.

    Open one with ``Run.open``; every option of a verb is a keyword.

    >>> run = Run.open("s3://my-bucket/leuktune/cnmc-binary")  # doctest: +SKIP
    >>> run.evaluate(top=2)  # the best 2 trials on the test split, once  # doctest: +SKIP
    >>> run.evaluate(external="/data/other-lab")  # another lab's cells  # doctest: +SKIP
    >>> run.report()  # doctest: +SKIP
    PosixPath('.../report/report.html')
    """

    def __init__(self, folder: RunFolder):
        self.folder = folder

    @classmethod
    def open(cls, location: str | Path) -> Run:
        """The run at ``location`` (a folder or a URI: ``s3://bucket/prefix/name?endpoint_override=...``),
        where it is now; a ``RunFolderError`` when it holds no run.

        >>> run = Run.open("runs/synthetic-default")  # doctest: +SKIP
        """
        return cls(RunFolder.existing(location))

    def __repr__(self) -> str:
        return f"Run({self.location!r})"

    @property
    def location(self) -> str:
        """Where the run is now: a local path or a URI."""
        return self.folder.uri()

    @property
    def config(self) -> ExperimentConfig:
        """The run's configuration (its ``config.yaml``), with this folder as its storage."""
        return self.folder.config()

    # -- reads: they write nothing

    def leaderboard(self) -> pd.DataFrame:
        """A row per trial (and one for the ensemble, ``trial_id == "ensemble"``), best first by the
        search metric; ``checkpoint_uri`` is where each checkpoint is now.

        >>> Run.open("runs/synthetic-default").leaderboard()[["trial_id", "val_balanced_accuracy"]]  # doctest: +SKIP
        """
        return leaderboard.load(self.location)

    def history(self) -> pd.DataFrame:
        """A row per trial and validated epoch (``history.parquet``); empty before the first trial ends.

        >>> Run.open("runs/synthetic-default").history().groupby("trial_id")["val_loss"].min()  # doctest: +SKIP
        """
        return leaderboard.history(self.folder)

    def study(self):
        """The search's Optuna study (``optuna.Study``), read from where the run keeps it (its
        ``study.db``, or the database ``search.study.storage`` names): every trial with its parameters,
        each epoch's value, its state (PRUNED where ASHA stopped it, FAIL where it failed) and user
        attributes ``trial_id``, ``node`` and ``checkpoint``. Optuna's own tools take it from here;
        ``python -m leuktune.dashboard RUN`` serves optuna-dashboard on it.

        >>> study = Run.open("runs/synthetic-default").study()  # doctest: +SKIP
        >>> optuna.importance.get_param_importances(study)  # doctest: +SKIP
        >>> study.trials_dataframe()[["number", "state", "value", "user_attrs_trial_id"]]  # doctest: +SKIP
        """
        # Optuna only when the study is read
        from leuktune.study import load

        return load(self.folder)

    def model(self, *, trial: str | None = None, device: str | None = None, adapted: str | None = None,
              per_class: int | None = None):
        """The trained model of a trial (default: the best with a checkpoint; ``trial="ensemble"``:
        the weighted ensemble of the best trials), with ``predict``, ``evaluate`` and ``probabilities``;
        with ``adapted``, that model adapted to the lab of that name (``adapt``) with ``per_class``
        labelled cells a class (default: the most it was adapted with).

        >>> model = Run.open("runs/synthetic-default").model()  # doctest: +SKIP
        >>> model.evaluate("test")["test_balanced_accuracy"]  # doctest: +SKIP
        0.98
        >>> Run.open("runs/synthetic-default").model(adapted="lab-b", per_class=10)  # doctest: +SKIP
        """
        # torch only when a model is loaded
        from leuktune.trained import load, load_ensemble, load_model, trial_row

        if adapted is not None:
            # the adapted models' layout only when one is asked for
            from leuktune.adapting.store import location

            return load(location(self.folder, adapted, per_class, trial), device=device, run=self.folder)
        if trial == ENSEMBLE_ID:
            return load_ensemble(self.folder, device=device)
        return load_model(trial_row(self.folder, trial), device=device)

    def adapted(self) -> pd.DataFrame:
        """The labs the run's models were adapted to (``adapt``): each lab's curve, a row per labelled
        cells a class (0: unadapted) and model, its balanced accuracy and macro F1 on the lab's held-out
        cells with 95% intervals; empty before the first.

        >>> Run.open("runs/synthetic-default").adapted()  # doctest: +SKIP
        """
        # the adapted models' layout only when they are read
        from leuktune.adapting.store import curves

        return curves(self.folder)

    def external(self) -> pd.DataFrame:
        """The external sets the run was scored on (``evaluate(external=...)``): a row per set and
        model, its balanced accuracy there (95% interval; over patients where the set names them)
        beside its internal test figure; empty before the first.

        >>> Run.open("runs/cnmc-binary").external()  # doctest: +SKIP
        """
        # the data layer (and Ray) only when a run has external sets to read
        from leuktune.evaluation.external import results

        return results(self.folder, self.leaderboard())

    def predict(self, images: Any, *, trial: str | None = None, tta: bool = False, device: str | None = None,
                adapted: str | None = None, per_class: int | None = None) -> pd.DataFrame:
        """Class and calibrated probabilities for images (file paths, PIL images or arrays; one or a
        list) by a trial's model (default: the best; ``trial="ensemble"``: the ensemble), or that
        model adapted to a lab (``adapted``, ``per_class``: as ``model`` takes them).

        >>> Run.open("runs/synthetic-default").predict(["cells/a.png", "cells/b.bmp"])  # doctest: +SKIP
        """
        return self.model(trial=trial, device=device, adapted=adapted, per_class=per_class).predict(images, tta=tta)

    # -- stages: each writes its own files into this run

    def evaluate(self, *, top: int | None = None, refit_folds: int | None = None, trial: str | None = None,
                 external=None, device: str | None = None, echo: Callable[[str], None] = print,
                 cv: int | None = None) -> pd.DataFrame:
        """Score the best trials on the test split, once, and optionally retrain them on folds.

        ``top`` trials by the search metric (default ``evaluate.top_k`` of the run's config) get
        the test figures (``test.parquet``: metrics, confusion matrix, 95% bootstrap intervals,
        calibration error before and after the temperature fitted on the validation split, which
        ``predict`` uses); ``trial`` picks one trial instead; the run's ensemble is selected and
        scored too (``ensemble.json``). Each model is scored per site (lab) of the test split as well
        (``test_by_site.parquet``, the leaderboard's ``test_<metric>_worst``). ``refit_folds=K`` retrains each chosen configuration on K
        group-disjoint folds, each image held out once (``refit_folds.parquet``, the leaderboard's
        ``refit_*`` columns): an estimate for small sets, not ``search.cv``, which chooses trials by
        folds. ``cv=K``, its earlier name, is read as ``refit_folds`` with a warning line. Returns
        the leaderboard, best first.

        ``external`` (a folder, an ``ExternalSet``, or a list of them) scores other datasets with
        the trials already evaluated and the ensemble, instead of the test split (which is
        evaluated first if no trial has been): ``external/<name>.parquet`` and
        ``.predictions.parquet`` (and ``.by_site.parquet``: a CSV manifest's ``site`` column names
        the set's labs), which ``external()`` reads back (``refit_folds`` and ``trial`` do
        not apply to them).

        >>> run = Run.open("runs/allidb2")  # doctest: +SKIP
        >>> board = run.evaluate(top=2, refit_folds=5)  # doctest: +SKIP
        >>> run.evaluate(external=leuktune.ExternalSet("/data/lab-b", classes={"blast": "ALL"}))  # doctest: +SKIP
        """
        # torch and Ray only when a verb needs them: opening a run and reading its tables is quick
        from leuktune.evaluation.driver import evaluate

        return evaluate(self.folder, top=top, refit_folds=_refit_folds(refit_folds, cv, echo), trial=trial,
                        external=external, device=device, echo=echo)

    def adapt(self, labelled, *, per_class: int | Sequence[int] = 10, unlabelled: str | Path | None = None,
              trial: str | None = None, name: str | None = None, seed: int = 0, steps: Sequence[str] | None = None,
              choose: bool = True, device: str | None = None, echo: Callable[[str], None] = print) -> pd.DataFrame:
        """Adapt the best trial (or ``trial``) and the ensemble to a new lab with ``per_class`` of its
        labelled cells a class (a number or several), and measure them on the lab's other cells.

        ``labelled``: the lab's cells with the run's class names (a class folder, bucket prefix, CSV
        manifest, or an ``ExternalSet`` mapping its names onto the run's); a class the model does not
        know is refused by name, and so is a class with fewer than ``per_class + 5`` cells.
        ``per_class`` cells of each class are drawn (whole patients, ``seed``); the rest are the lab's
        test, never used to fit or choose anything. ``unlabelled``: a folder of more of the lab's
        images, for the steps that read no label. ``steps`` (default ``leuktune.adapting.DEFAULT_STEPS``)
        are chosen from by cross-validation on the labelled cells (``choose=False``: each is applied,
        at a fraction of the cost). Each adapted model is written once
        under ``adapted/<name>/<per_class>/`` (``name``: default the set's), loaded with
        ``model(adapted=name, per_class=...)``; the run's own models are never changed. Returns the
        curve (also ``adapted/<name>/curve.parquet``; ``adapted()`` reads every lab's).

        >>> run = Run.open("runs/synthetic-default")  # doctest: +SKIP
        >>> run.adapt("/data/lab-b", per_class=[5, 10, 20])  # doctest: +SKIP
        >>> run.adapt(leuktune.ExternalSet("/data/lab-c", classes={"Lymphocytes": "lymphocyte"}), name="lab-c")  # doctest: +SKIP
        """
        # torch, Ray and the adapting steps only when a run is adapted
        from leuktune.adapting import Plan, adapt_run

        plan = Plan(choose=choose) if steps is None else Plan(steps=tuple(steps), choose=choose)
        return adapt_run(self.folder, labelled, per_class=per_class, unlabelled=unlabelled, trial=trial, name=name,
                         seed=seed, plan=plan, device=device, echo=echo)

    def report(self, *, out: str | Path | None = None, compare: tuple[str | Path | RunFolder, ...] = (),
               echo: Callable[[str], None] = print) -> Path:
        """Markdown and self-contained HTML of the run (and of the ``compare`` runs merged into it):
        top trials, the best per backbone/head, learning curves, the test split, the ensemble,
        external sets, the data. Written to ``out`` (default: the run's ``report/``; a run in a
        bucket: ``./report``). Returns the HTML file.

        >>> Run.open("runs/synthetic-default").report()  # doctest: +SKIP
        """
        # matplotlib, Optuna and grad-cam only for a report
        from leuktune.report.build import write_report

        return write_report([self.folder, *compare], out, echo)

    def export(self, *, trial: str | None = None, format: str = "onnx", out: str | Path | None = None,
               adapted: str | None = None, per_class: int | None = None) -> Path:
        """A trial's model (default: the best; ``trial="ensemble"``: one graph averaging the
        ensemble; ``adapted``, ``per_class``: that model adapted to a lab, as ``model`` takes them) as
        ONNX or TorchScript, with its ``preprocessing.json``, checked against PyTorch on the run's test
        images. Written to ``out`` (default: the run's ``export/<trial>``, ``export/<trial>-<lab>-<per
        class>`` for an adapted model; a run in a bucket: ``./export-...``). Returns the model file.

        >>> Run.open("runs/synthetic-default").export(format="onnx")  # doctest: +SKIP
        """
        # torch and onnx only for an export
        from leuktune.exporting import default_out, export
        from leuktune.trained import trial_row

        if adapted is None:
            trial = trial or trial_row(self.folder, None)["trial_id"]
            model, label = self.model(trial=trial, device="cpu"), trial
        else:
            model = self.model(trial=trial, device="cpu", adapted=adapted, per_class=per_class)
            label = f"{model.record.source_id}-{adapted}-{model.record.per_class}"
        return export(model, out or default_out(self.folder, label), format)


def _refit_folds(refit_folds: int | None, cv: int | None, echo: Callable[[str], None]) -> int | None:
    """``refit_folds``, or ``cv`` (its earlier name) with one warning line."""
    if cv is None:
        return refit_folds
    echo(f"[leuktune] WARNING: evaluate(cv={cv}) is now evaluate(refit_folds={cv}) (retraining the chosen trials on "
         "folds; search.cv is the folds that choose them); read as refit_folds")
    if refit_folds is not None and refit_folds != cv:
        raise ConfigError(f"evaluate: cv={cv} (the earlier name of refit_folds) and refit_folds={refit_folds} differ; "
                          "give refit_folds only")
    return cv


def evaluate(run: str | Path, *, top: int | None = None, refit_folds: int | None = None, trial: str | None = None,
             external=None, device: str | None = None, echo: Callable[[str], None] = print,
             cv: int | None = None) -> pd.DataFrame:
    """``leuktune.evaluate(run, ...)``: ``Run.open(run).evaluate(...)`` (see ``Run.evaluate``).

    >>> board = leuktune.evaluate("runs/allidb2", top=2, refit_folds=5)  # doctest: +SKIP
    """
    return Run.open(run).evaluate(top=top, refit_folds=refit_folds, trial=trial, external=external, device=device,
                                  echo=echo, cv=cv)
