"""``leuktune.evaluate``: a search's final, honest figures."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd


def evaluate(run: str | Path, *, top: int | None = None, cv: int | None = None, trial: str | None = None,
             external=None, device: str | None = None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Score a search's best trials on its test split, once, and optionally cross-validate them.

    ``run`` is the run folder (local or a URI). ``top`` trials by the search metric (default
    ``evaluate.top_k`` of the run's config) get the leaderboard's ``test_*`` columns: metrics,
    confusion matrix, 95% bootstrap intervals, calibration error before and after temperature
    scaling (the temperature is stored with the checkpoint). ``trial`` picks one trial instead.
    ``cv=K`` retrains each chosen configuration on K group-disjoint folds and fills the
    ``cv_*`` columns (mean and standard deviation) and ``cv.parquet`` (each fold). Returns the
    updated leaderboard, best first.

    ``external`` (a folder, an ``ExternalSet``, or a list of them) scores other datasets with the
    trials already evaluated and the ensemble, instead of the test split (which is evaluated
    first if no trial has been): ``external/<name>.parquet`` and ``.predictions.parquet`` in the
    run folder; the returned table then has a row per (set, model) beside the internal figure.

    >>> board = leuktune.evaluate("runs/allidb2", top=2, cv=5)  # doctest: +SKIP
    >>> leuktune.evaluate("runs/cnmc-binary", external=leuktune.ExternalSet("/data/lab-b"))  # doctest: +SKIP
    """
    # python -m leuktune.evaluate imports this module before it parses --help: torch and Ray only when it runs
    from leuktune.runfolder import RunFolder
    from leuktune.runfolder.lock import SearchLock

    folder = RunFolder.at(run)
    with SearchLock(folder):  # not while a search writes the same leaderboard
        if external is None:
            return evaluate_run(folder, top=top, cv=cv, trial=trial, device=device, echo=echo)
        # the external path's modules only when it is taken
        from leuktune import leaderboard, runfolder
        from leuktune.evaluate.external import ExternalSet, external_evaluation

        sets = [ExternalSet(str(e)) if isinstance(e, (str, Path)) else e
                for e in (external if isinstance(external, (list, tuple)) else [external])]
        board = leaderboard.load(folder.uri()) if folder.exists(runfolder.LEADERBOARD) else None
        if board is None or board["test_balanced_accuracy"].isna().all():
            board = evaluate_run(folder, top=top, device=device, echo=echo)
        return external_evaluation(folder, folder.saved_config(), board, sets, device, echo)


def _replace_rows(folder, name: str, new: pd.DataFrame, trial_ids) -> None:
    """A run table with the rows of ``trial_ids`` replaced by ``new``."""
    old = folder.read_frame(name) if folder.exists(name) else pd.DataFrame()
    if len(old):
        old = old[~old["trial_id"].isin(list(trial_ids))]
    folder.write_table(name, pd.concat([old, new], ignore_index=True))


def evaluate_run(folder, *, top: int | None = None, cv: int | None = None, trial: str | None = None,
                 device: str | None = None, data=None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """``evaluate`` for a folder this process already holds (the search calls it when it ends,
    with the ``data`` its trials ran on; otherwise the data is prepared from the run's config)."""
    # python -m leuktune.evaluate imports this module before it parses --help: torch and Ray only when it runs
    from leuktune import leaderboard, runfolder
    from leuktune.config import ConfigError
    from leuktune.data.prepare import prepare
    from leuktune.evaluate import cv as crossval
    from leuktune.evaluate.ensemble import ensemble_evaluation
    from leuktune.evaluate.final import evaluable, final_evaluation
    from leuktune.trained import ENSEMBLE_ID

    if not folder.exists(runfolder.CONFIG):
        raise leaderboard.LeaderboardError(f"{folder.uri()}: not a run folder (no {runfolder.CONFIG})")
    cfg = folder.saved_config()
    board = leaderboard.load(folder.uri())
    if trial == ENSEMBLE_ID:
        raise ConfigError(f"{folder.uri()}: the ensemble is evaluated with the run (python -m leuktune.evaluate "
                          "RUN); --trial takes one of its trials")
    if trial is not None:
        if trial not in set(board["trial_id"]):
            raise ConfigError(f"trial {trial!r} is not in {folder.uri()}; its trials are "
                              f"{', '.join(board['trial_id'])}")
        chosen = board[board["trial_id"] == trial]
    else:
        chosen = evaluable(board).head(cfg.evaluate.top_k if top is None else top)
    if chosen.empty:
        echo("[leuktune] no trial to evaluate (none finished with a checkpoint)")
        return board
    if data is None:
        data, _ = prepare(cfg, progress=lambda message: None)
    split = folder.read_frame(runfolder.SPLIT)
    board, figures, predictions = final_evaluation(cfg, board, chosen, data, split, echo, device)
    _replace_rows(folder, runfolder.EVALUATION, pd.DataFrame(figures), chosen["trial_id"])
    _replace_rows(folder, runfolder.PREDICTIONS, pd.concat(predictions, ignore_index=True), chosen["trial_id"])
    if trial is None:
        ensembled = ensemble_evaluation(cfg, board, evaluable(board), data, split, folder, echo, device)
        if ensembled is not None:
            row, figures, predicted = ensembled
            board = pd.concat([board[board["trial_id"] != ENSEMBLE_ID], pd.DataFrame([row])], ignore_index=True)
            _replace_rows(folder, runfolder.EVALUATION, pd.DataFrame(figures), [ENSEMBLE_ID])
            _replace_rows(folder, runfolder.PREDICTIONS, predicted, [ENSEMBLE_ID])
    if cv:
        shared = data.shared()  # into Ray's object store once, for every fold of every trial
        per_fold = pd.concat([crossval.cross_validate(cfg, row, shared, split, cv, folder, echo, device)
                              for _, row in chosen.iterrows()], ignore_index=True)
        _replace_rows(folder, runfolder.CV, per_fold, chosen["trial_id"])
        for trial_id, folds in per_fold.groupby("trial_id"):
            for key, value in crossval.summary(folds).items():
                board.loc[board["trial_id"] == trial_id, key] = value
    leaderboard.save(folder, board, list(cfg.searched()))
    return leaderboard.load(folder.uri())
