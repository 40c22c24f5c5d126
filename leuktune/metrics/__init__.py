"""The classification metrics: one table that names them, says which way is better, and
computes them (with scikit-learn, so they match what reviewers recompute).

Everything else reads this table: the schema's choice of search metric and its direction,
the per-epoch validation scores, the leaderboard's ``val_*``/``test_*`` columns. A trial's
per-epoch figures come from the same vectorised pass as their standard errors
(``scores_and_errors``), pinned to the table's by a test: a trial never imports scikit-learn.

The table (table.py), a split's figures (scores.py), their bootstrap standard errors
(bootstrap.py), calibration and temperature scaling (calibration.py).
``from leuktune.metrics import METRICS, classification_metrics``.
"""

from leuktune.metrics.bootstrap import SE_RESAMPLES, group_resamples, resampled, scores_and_errors, standard_errors
from leuktune.metrics.scores import classification_metrics, confusion_matrix, score, split_scores
from leuktune.metrics.table import COSTS, METRICS, OBJECTIVES, WORST, Scored, mode, of_worst

__all__ = [
    "METRICS", "COSTS", "OBJECTIVES", "WORST", "Scored", "mode", "of_worst",
    "classification_metrics", "score", "confusion_matrix", "split_scores",
    "resampled", "group_resamples", "standard_errors", "scores_and_errors", "SE_RESAMPLES",
]
