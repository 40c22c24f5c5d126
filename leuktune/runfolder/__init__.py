"""Where a run's files live, derived in one place, on a local disk or in a bucket.

``<storage.path>/<name>/`` holds the resolved ``config.yaml``, ``split.parquet``, each stage's
own table (the search's ``trials.parquet`` and ``history.parquet``, and
``sites.parquet`` under search.cv: sites; the final evaluation's
``test.parquet``, ``evaluation.parquet``, ``test_predictions.parquet``, ``ensemble.json`` and
``refit_folds.parquet``; ``external/``), the ``leaderboard.parquet`` derived from them (leuktune.leaderboard),
``rejected.parquet`` and ``near_duplicates.parquet`` when there are any, the search's Optuna study
``study.db`` (leuktune.study), TensorBoard's event files under ``tensorboard/`` when asked for, Ray Tune's state and the
trials' checkpoints under ``tune/`` (and ``trials/`` for Ray Train launched trials), models adapted
to other labs under ``adapted/`` (leuktune.adapting), and the report under ``report/``. ``storage.path`` is a local folder or a URI (leuktune.uris). Decoded images,
frozen backbones' features and the built-in data set stay on this machine's disk (``data.cache_dir``).

The names (layout.py), the folder and its path rules (folder.py), reading and writing its files
(tables.py), this machine's folders for it (caches.py), the search's hold on it (lock.py).
``from leuktune.runfolder import RunFolder``; ``runfolder.LEADERBOARD`` and the other names.
"""

from leuktune.runfolder.folder import RunFolder, RunFolderError
from leuktune.runfolder.layout import (ADAPTED, CONFIG, ENSEMBLE, EVALUATION, EXPORT, EXTERNAL, HISTORY, LEADERBOARD,
                                       LOCK, NEAR_DUPLICATES, PREDICTIONS, REFIT_FOLDS, REJECTED, RENAMED_FILES, REPORT,
                                       SITES,
                                       SPANNING_GROUPS, SPLIT, STUDY, TENSORBOARD, TEST, TRIALS, TRIALS_TABLE, TUNE, adapted, external,
                                       history_part)

__all__ = [
    "RunFolder", "RunFolderError", "adapted", "external", "history_part", "ADAPTED",
    "CONFIG", "SPLIT", "LEADERBOARD", "TRIALS_TABLE", "TEST", "ENSEMBLE", "EXTERNAL", "HISTORY", "STUDY", "TENSORBOARD",
    "REJECTED", "NEAR_DUPLICATES", "LOCK", "EVALUATION", "PREDICTIONS", "REFIT_FOLDS", "TUNE", "TRIALS", "REPORT", "EXPORT",
    "RENAMED_FILES", "SITES", "SPANNING_GROUPS",
]
