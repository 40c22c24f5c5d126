"""``leuktune.search``: the whole search, from an experiment to its ranked leaderboard."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from leuktune import runtime
from leuktune.errors import LeuktuneError

if TYPE_CHECKING:  # pandas costs half a second to import: python -m leuktune.search --help does not need it
    import pandas as pd


class SearchError(LeuktuneError, RuntimeError):
    """A search that cannot start or continue, or ran and produced nothing to rank."""

    exit_status = 1  # the command line's: the search began (or was asked to go on) and failed


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def search(config: str | Path | None = None, overrides: Sequence[str] = (), *, address: str | None = None,
           resume: bool = False, echo: Callable[[str], None] = runtime.echo) -> pd.DataFrame:
    """Run a search and return its leaderboard, best trial first.

    ``config`` is an experiment file, an ``ExperimentConfig``, or None for the built-in
    experiment (a synthetic blood-smear set, on the CPU, in minutes); ``overrides`` are
    ``KEY=VALUE`` strings as ``--set`` takes them. Ray is the one this process is connected
    to, else ``address`` (default ``RAY_ADDRESS``), else the local cluster ``ray start`` recorded
    if it answers, else a local Ray started for the search (``leuktune.runtime.choose_address``).
    When the trials end, the best ``evaluate.top_k`` are scored once on the test split
    (``leuktune.evaluate``).
    ``resume=True`` continues the interrupted search of the same run folder (its own saved
    configuration): finished trials are not run again, unfinished ones go on from their last
    checkpoint, the searcher keeps what it learned and goes on with the same study. The study is in
    a database (``search.study``: the run's ``study.db`` by default; ``leuktune.Run.study``), started
    from earlier runs' trials with ``search.warm_start``; ``tracking`` sends each trial to MLflow or
    TensorBoard as well. A bad configuration raises ``ConfigError``
    and bad data ``DataError``, a study database or tracking server that cannot be reached
    ``StudyError`` or ``TrackingError``, all before any trial starts; a folder that a live search is
    using, or that holds another search, raises ``SearchError``.

    >>> import leuktune
    >>> board = leuktune.search(overrides=["search.num_samples=2"])  # doctest: +SKIP
    >>> board[["trial_id", "backbone", "val_balanced_accuracy"]].head()  # doctest: +SKIP
    """
    # Imported here so that a configuration error costs a second, not a Ray start.
    from leuktune import leaderboard, runfolder, tracking
    from leuktune.config import load
    from leuktune.evaluation.driver import evaluate_run
    from leuktune.models import weights
    from leuktune.models.space_check import check_model_space
    from leuktune.runfolder import RunFolder
    from leuktune.runfolder.lock import FolderInUse, SearchLock
    from leuktune.tuning import study_setup
    from leuktune.tuning.searcher import with_grid_size

    cfg = RunFolder.resolved(with_grid_size(load(config, overrides)))
    folder = RunFolder.of(cfg)
    check_model_space(cfg)
    weights.check(cfg)
    try:
        with SearchLock(folder):  # first: a live search's folder is refused as such
            cfg = _continued(cfg, folder, resume, echo)
            if not resume:
                folder.write_text(runfolder.CONFIG, cfg.to_yaml())
            echo(f"[leuktune] experiment {cfg.name!r}: {'resuming' if resume else 'searching'} "
                 f"{', '.join(cfg.searched()) or 'nothing'}; {cfg.search.num_samples} trial(s), run folder "
                 f"{folder.uri()}")
            # the study's database and the trackers are reached before Ray starts: one error, no trial run
            study = study_setup.prepare(cfg, folder, resume=resume, echo=echo)
            followers = tracking.followers(cfg, folder)
            with runtime.ray_session(address, echo):
                _check_storage_is_shared(folder)
                data = prepare_data(cfg, echo)
                run_trials(with_folds(cfg, data, echo), data, echo, resume=resume, study=study, followers=followers)
            study_setup.close_lost(study)
            if not folder.exists(runfolder.LEADERBOARD):
                raise SearchError(f"no trial of {cfg.name!r} finished; see the Ray output above")
            if cfg.evaluate.top_k:  # the test split is read here, and only here
                return evaluate_run(folder, data=data, echo=echo)
    except FolderInUse as err:
        raise SearchError(str(err)) from None
    return leaderboard.load(folder.uri())


def _continued(cfg, folder, resume: bool, echo: Callable[[str], None]):
    """The configuration to run: with ``resume``, the run's own (the folder must hold a search
    to resume); without it, ``cfg``, in a folder that holds no search yet."""
    # leuktune.search is read without running a search (help(), the API's names): Ray and torch only when one runs
    from ray import tune

    from leuktune import leaderboard, runfolder

    restorable = tune.Tuner.can_restore(folder.tune, storage_filesystem=folder.fs)
    if not resume:
        if restorable or folder.exists(runfolder.LEADERBOARD):
            raise SearchError(f"{folder.uri()} already holds a search; --resume (resume=True) continues it, "
                              f"or --set name=<another> starts a new one beside it")
        return cfg
    if not restorable:
        raise SearchError(f"{folder.uri()}: no search to resume here; start one with "
                          f"python -m leuktune.search --set name={cfg.name} (and the same --config/--set)")
    leaderboard.migrate(folder)  # a search of an earlier release gets each stage's table before it goes on
    saved = folder.saved_config()
    theirs = _flat(saved.to_dict())
    changed = sorted(k for k, v in _flat(cfg.to_dict()).items() if theirs.get(k) != v)
    if changed:
        echo(f"[leuktune] resuming with the run's own {runfolder.CONFIG}; yours differs in {', '.join(changed)}")
    return saved


def _check_storage_is_shared(folder) -> None:
    """A run folder on this machine's disk must be one that every node sees (NFS): trials on other
    nodes write their checkpoints there, and the driver reads them. Asked of the nodes in the
    cluster now (an autoscaler's later nodes are not asked)."""
    # leuktune.search is read without running a search (help(), the API's names): Ray and torch only when one runs
    from leuktune import runfolder
    from leuktune.data.placement import other_nodes, unseen_by

    if not folder.local:
        return
    nodes = other_nodes()
    config = folder.file(runfolder.CONFIG)
    stat = os.stat(config)
    unseen = unseen_by(nodes, [(config, stat.st_size, stat.st_mtime_ns)]) if nodes else []
    if unseen:
        raise SearchError(
            f"storage.path {folder.storage} is a folder of this machine that {len(unseen)} of {len(nodes)} other "
            f"node(s) of the cluster do not see (e.g. {unseen[0]}): their trials' checkpoints would be lost. "
            "Use a bucket every node reaches (storage.path=s3://bucket/prefix or gs://bucket/prefix) or a folder "
            "every node mounts at the same path (NFS)")


def prepare_data(cfg, echo: Callable[[str], None] = runtime.echo):
    """The run's data (``leuktune.data.prepare``), with a line on what was found and one when it
    is ready: the trials and the final evaluation of the search share it."""
    # leuktune.search is read without running a search (help(), the API's names): Ray and torch only when one runs
    from leuktune.data.prepare import prepare

    started = time.monotonic()
    data, report = prepare(cfg, progress=echo)
    echo("[leuktune] data: " + str(report))
    echo(f"[leuktune] data ready at {cfg.data.image_size}px in {time.monotonic() - started:.1f}s")
    return data


def with_folds(cfg, data, echo: Callable[[str], None] = runtime.echo):
    """``cfg`` with ``search.cv`` as a number of folds, sites, or off (``auto`` decided by the data's
    size); before any trial, a DataError when a class has fewer groups than folds, a ConfigError when
    sites finds fewer than two training sites."""
    # leuktune.search is read without running a search (help(), the API's names): Ray and torch only when one runs
    from leuktune.data import folds

    cv = folds.resolve(cfg.search.cv, data)
    if cv == folds.SITES:
        folds.check_sites(data)  # a csv's site column is only known now (data.sites: checked with the config)
        held = folds.training_sites(data)
        echo(f"[leuktune] search.cv sites: each trial trains {len(held)} models, each validated on one lab it never "
             f"saw ({', '.join(held)}), and is judged by their mean (val_*) and its worst lab (val_*_worst)")
    elif cv:
        folds.check_folds(data, cv)
        echo(f"[leuktune] search.cv {cfg.search.cv}: each trial trains {cv} models on {cv} group-disjoint folds of "
             f"the {len(folds.pooled(data))} training and validation images and is judged by their mean")
    elif cfg.search.cv == "auto":
        echo(f"[leuktune] search.cv auto: {len(folds.pooled(data))} training and validation images (at least "
             f"{folds.AUTO_BELOW}): one validation split, no cross-validation")
    return cfg.model_copy(update={"search": cfg.search.model_copy(update={"cv": cv})})


def run_trials(cfg, data, echo: Callable[[str], None] = runtime.echo, callbacks: tuple = (), resume: bool = False,
               study=None, followers: list | None = None):
    """Run every trial of a validated, resolved config on its prepared ``data``, on the Ray this
    process is connected to; Tune's ResultGrid. ``callbacks`` are extra Tune callbacks; ``study``
    where the searcher keeps its study (None: in memory), ``followers`` trackers (leuktune.tracking)."""
    # leuktune.search is read without running a search (help(), the API's names): Ray and torch only when one runs
    from leuktune.runfolder import RunFolder
    from leuktune.tuning.tuner import build_tuner

    return build_tuner(cfg, data, RunFolder.of(cfg), echo=echo, callbacks=callbacks, resume=resume, study=study,
                       followers=followers).fit()
