"""The names of a run folder's files and folders, relative to the folder (``<storage.path>/<name>/``).

Every stage reads and writes its tables under these names, so a run written by one release is
found by the next; ``leuktune.runfolder.RunFolder`` turns them into paths or URIs of where the
run is now.

>>> external("blood-lab"), external("blood-lab", "predictions")
('external/blood-lab.parquet', 'external/blood-lab.predictions.parquet')
"""

from __future__ import annotations

CONFIG = "config.yaml"
SPLIT = "split.parquet"
LEADERBOARD = "leaderboard.parquet"  # derived from the stages' tables (leuktune.leaderboard.derive)
TRIALS_TABLE = "trials.parquet"  # the search's: a row per trial (a run of an earlier release has none)
TEST = "test.parquet"  # the final evaluation's: a row per model scored on the test split
ENSEMBLE = "ensemble.json"  # the weighted ensemble of the best trials: members, weights, temperatures
EXTERNAL = "external"  # external test sets: <name>.parquet (metrics), <name>.predictions.parquet
HISTORY = "history.parquet"
SITES = "sites.parquet"  # search.cv: sites: a row per trial and held-out site (leuktune.leaderboard.held_out)
STUDY = "study.db"  # the search's Optuna study (SQLite), unless search.study.storage names a database
TENSORBOARD = "tensorboard"  # tracking.tensorboard: one folder of event files per trial
REJECTED = "rejected.parquet"
NEAR_DUPLICATES = "near_duplicates.parquet"
SPANNING_GROUPS = "spanning_groups.parquet"  # groups with images at two or more sites (leuktune.data.sites)
LOCK = "search.lock"
# the final evaluation's tables (leuktune.evaluate)
EVALUATION = "evaluation.parquet"
PREDICTIONS = "test_predictions.parquet"
# the chosen trials retrained on K group-disjoint folds (evaluate --refit-folds K): a row per trial and fold
REFIT_FOLDS = "refit_folds.parquet"
TUNE = "tune"  # Ray Tune's run: the searcher's state and the trials' folders (checkpoints)
TRIALS = "trials"  # Ray Train launched trials' runs, one per trial id
REPORT = "report"
EXPORT = "export"
ADAPTED = "adapted"  # models adapted to other labs: <name>/curve.parquet, <name>/<per_class>/<model>/
# Earlier releases' names of files -> today's: a run folder of an earlier release is read under
# them (leuktune.leaderboard.read_renamed), and an evaluation gives it today's (leuktune.leaderboard.migrate).
RENAMED_FILES = {"cv.parquet": REFIT_FOLDS}  # "cv" was search.cv's word too, which chooses trials by folds


def external(name: str, part: str | None = None) -> str:
    """An external test set's table in the run folder: its metrics, or ``part`` (predictions, near_training)."""
    return f"{EXTERNAL}/{name}{'.' + part if part else ''}.parquet"


def adapted(name: str, per_class: int | None = None, part: str | None = None) -> str:
    """A lab's adaptations in the run folder (``Run.adapt``): its folder, one ``per_class``'s, or a
    ``part`` of either (``curve.parquet``, ``cells.parquet``, a model's folder).

    >>> adapted("lab-b", 10, "ensemble")
    'adapted/lab-b/10/ensemble'
    """
    return "/".join([ADAPTED, name, *([str(per_class)] if per_class is not None else []), *([part] if part else [])])


def history_part(trial_id: str) -> str:
    """A running trial's epochs so far, stored at once (they join HISTORY when the trial ends)."""
    return f"history/{trial_id}.parquet"
