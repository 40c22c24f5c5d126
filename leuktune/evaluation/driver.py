"""A search's final, honest figures, stage by stage: the test split (``final``), the ensemble
(``ensemble``), the chosen trials retrained on folds (``refit_folds``) and other labs' sets (``external``). Each writes its own
table into the run folder once; the leaderboard is derived from them afterwards. ``leuktune.Run``'s
``evaluate`` and ``python -m leuktune.evaluate`` call ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from leuktune import leaderboard, runfolder, tracking
from leuktune.config import ConfigError
from leuktune.data.prepare import prepare
from leuktune.evaluation import by_site
from leuktune.evaluation.refit_folds import refit_on_folds
from leuktune.evaluation.ensemble import ensemble_evaluation
from leuktune.evaluation.final import evaluable, final_evaluation
from leuktune.runfolder.lock import SearchLock
from leuktune.leaderboard import ENSEMBLE_ID


def evaluate(folder, *, top: int | None = None, refit_folds: int | None = None, trial: str | None = None,
             external=None, device: str | None = None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Score the run's best trials on its test split, once, and optionally retrain them on folds;
    or, with ``external`` (a folder, an ``ExternalSet``, or a list of them), score other datasets
    with the trials already evaluated and the ensemble (the test split is evaluated first if no
    trial has been). ``folder`` is the run's ``RunFolder`` where it is now. Returns the
    leaderboard, best first. See ``leuktune.Run.evaluate``."""
    with SearchLock(folder):  # not while a search writes the same run
        if external is None:
            return evaluate_run(folder, top=top, refit_folds=refit_folds, trial=trial, device=device, echo=echo)
        if refit_folds is not None or trial is not None:
            raise ConfigError("external sets are scored with the trials the final evaluation scored and the "
                              "ensemble: refit_folds and trial do not apply to them (evaluate the run first, "
                              "then --external)")
        # the external path's modules only when it is taken
        from leuktune.evaluation.external import ExternalSet, external_evaluation

        sets = [ExternalSet(str(e)) if isinstance(e, (str, Path)) else e
                for e in (external if isinstance(external, (list, tuple)) else [external])]
        board = leaderboard.load(folder.uri())
        if board["test_balanced_accuracy"].isna().all():
            board = evaluate_run(folder, top=top, device=device, echo=echo)
        external_evaluation(folder, folder.config(), board, sets, device, echo)
        return board


def evaluate_run(folder, *, top: int | None = None, refit_folds: int | None = None, trial: str | None = None,
                 device: str | None = None, data=None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """``evaluate`` on the test split, for a folder this process already holds (the search calls it
    when it ends, with the ``data`` its trials ran on; otherwise the run's data is read back)."""
    leaderboard.migrate(folder)  # a run of an earlier release gets each stage's table first
    cfg = folder.config()
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
        data, _ = prepare(cfg, progress=lambda message: None, folder=folder, record=False)
    split = folder.read_frame(runfolder.SPLIT)
    scored, figures, predictions = final_evaluation(cfg, chosen, data, split, echo, device)
    tested = [figures.to_row() for figures in scored]
    _store(folder, runfolder.TEST, tested, chosen["trial_id"], leaderboard.TEST)
    _store(folder, runfolder.EVALUATION, figures, chosen["trial_id"])
    _store(folder, runfolder.PREDICTIONS, pd.concat(predictions, ignore_index=True), chosen["trial_id"])
    _by_site(folder, cfg, predictions, split, data.class_names, echo)
    tracking.record_test_figures(cfg, tested, echo)  # once the tables are written: a tracker is a follower
    if trial is None:
        tested = leaderboard.tests(folder)
        temperatures = dict(zip(tested["trial_id"], tested["temperature"]))
        ensembled = ensemble_evaluation(cfg, evaluable(board), data, split, folder, temperatures, echo, device)
        if ensembled is not None:
            scored, figures, predicted = ensembled
            _store(folder, runfolder.TEST, [scored.to_row()], [ENSEMBLE_ID], leaderboard.TEST)
            _store(folder, runfolder.EVALUATION, figures, [ENSEMBLE_ID])
            _store(folder, runfolder.PREDICTIONS, predicted, [ENSEMBLE_ID])
            _by_site(folder, cfg, [predicted], split, data.class_names, echo, say_absent=False)  # said above
    if refit_folds:
        shared = data.shared()  # into Ray's object store once, for every fold of every trial
        per_fold = pd.concat([refit_on_folds(cfg, row, shared, split, refit_folds, folder, echo, device)
                              for _, row in chosen.iterrows()], ignore_index=True)
        _store(folder, runfolder.REFIT_FOLDS, per_fold, chosen["trial_id"])
    leaderboard.write(folder)
    return leaderboard.load(folder.uri())


def _by_site(folder, cfg, predictions: list[pd.DataFrame], split: pd.DataFrame, classes: tuple[str, ...],
             echo: Callable[[str], None], say_absent: bool = True) -> None:
    """Each model's test figures by site (``test_by_site.parquet``, a row per model and site; the
    leaderboard's test_*_worst), and with several sites a line per model and one per site that
    lacks a class."""
    groups = split["group"].to_numpy()
    rows = [by_site.from_predictions(p, groups[p["row"].to_numpy()], classes, cfg) for p in predictions]
    _store(folder, runfolder.TEST_BY_SITE, [r for model in rows for r in model],
           [p["trial_id"].iloc[0] for p in predictions], leaderboard.SITE_FIGURES)
    if rows and by_site.several(rows[0]):
        for model in rows:
            echo(by_site.model_line(model, "test split"))
        for said in by_site.absent_lines(rows[0], classes) if say_absent else []:
            echo(said)


def _store(folder, name: str, rows, trial_ids, columns=None) -> None:
    """A stage's table with the rows of ``trial_ids`` replaced by ``rows`` (typed when ``columns``
    names its schema)."""
    if columns is not None:
        leaderboard.append(folder, name, rows, columns, replacing=trial_ids)
        return
    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    old = folder.read_frame(name) if folder.exists(name) else pd.DataFrame()
    if len(old):
        old = old[~old["trial_id"].isin(list(trial_ids))]
    folder.write_table(name, pd.concat([old, new], ignore_index=True))
