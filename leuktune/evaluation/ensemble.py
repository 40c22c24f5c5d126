"""The strongest model a search's trials make together: greedy ensemble selection with
replacement (Caruana et al. 2004; AutoGluon's weighted ensemble) over the validation-split
probabilities of the best ``evaluate.ensemble`` trials, whatever their backbones.

Each member's probabilities are first calibrated with its own temperature (the final evaluation's,
fitted on the validation split; fitted here for a candidate it did not score); the ensemble averages them with the selected weights and is then calibrated
on the validation split like a trial. Selection reads validation predictions only; the test split
is read once, at the end, for the members that got a weight.

>>> labels = np.array([0, 0, 1, 1])
>>> a = np.array([[.9, .1], [.8, .2], [.6, .4], [.2, .8]])  # wrong on the third image
>>> b = np.array([[.6, .4], [.4, .6], [.1, .9], [.3, .7]])  # wrong on the second
>>> weights = select([a, b], labels, "val_balanced_accuracy")
>>> metrics.score("balanced_accuracy", labels, combine([a, b], weights))  # together right on all four
1.0
>>> weights.tolist()  # of the weightings right on all four, the one with the lowest log loss
[0.8, 0.2]
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from leuktune import metrics, runfolder
from leuktune.config import ExperimentConfig
from leuktune.data.cache import CachedDataset
from leuktune.evaluation.final import line, test_figures
from leuktune.evaluation.patients import VARIANT
from leuktune.metrics import classification_metrics
from leuktune.metrics.calibration import fit_temperature, rescale
from leuktune.results import EnsembleRecord, TestFigures
from leuktune.leaderboard import ENSEMBLE_ID
from leuktune.trained import EnsembleModel, Trained, combine, load_model

ROUNDS = 25  # additions with replacement (AutoGluon's default): weights in steps of 1/25


def _key(labels: np.ndarray, probs: np.ndarray, metric: str) -> tuple[float, float]:
    """Bigger is better: the metric the search optimised, then (for ties) a lower log loss."""
    name = metric.removeprefix("val_")
    value = metrics.score(name, labels, probs)
    sign = 1 if metrics.mode(name) == "max" else -1
    return sign * value, -metrics.score("loss", labels, probs)


def select(member_probs: list[np.ndarray], labels: np.ndarray, metric: str, rounds: int = ROUNDS) -> np.ndarray:
    """Each member's weight (summing to 1) in the weighted average of ``member_probs`` that
    scores best on ``labels`` by ``metric``: at each round the member whose addition helps most
    is added again (ties: the earlier, better ranked, member); the best round's weights are
    kept. The first round picks the best single member, so the ensemble is never worse than it
    on these predictions."""
    counts = np.zeros(len(member_probs))
    total = np.zeros_like(member_probs[0], dtype=np.float64)
    best_key, best_weights = None, None
    for added in range(1, rounds + 1):
        keys = [_key(labels, (total + p) / added, metric) for p in member_probs]
        pick = max(range(len(keys)), key=lambda i: (keys[i], -i))
        counts[pick] += 1
        total += member_probs[pick]
        if best_key is None or keys[pick] > best_key:
            best_key, best_weights = keys[pick], counts / added
    return best_weights


def build_ensemble(cfg: ExperimentConfig, candidates: pd.DataFrame, models: list[Trained], data: CachedDataset,
                   folder, temperatures: dict[str, float]) -> EnsembleModel:
    """Select the ensemble of ``candidates`` (ranked leaderboard rows with checkpoints) and their
    ``models`` on the validation split, calibrate it there, and write ``ensemble.json``
    (checkpoints relative to the run). ``temperatures``: the final evaluation's, by trial id. Reads
    no test image. The models given keep their own temperatures: the ensemble's members are
    copies calibrated as it selected them."""
    val_labels = data.labels[data.indices("val")]
    members, calibrated = [], []
    for trial_id, model in zip(candidates["trial_id"], models):
        probs = model.split_probabilities(data, "val")
        fitted = temperatures.get(trial_id)
        temperature = fitted if fitted is not None and np.isfinite(fitted) else fit_temperature(probs, val_labels)
        members.append(model.with_temperature(temperature))
        calibrated.append(rescale(probs, temperature))
    # a worst-site search metric (search.cv: sites) selects on its metric over the pooled validation images
    metric = metrics.of_worst(cfg.search.metric)
    weights = select(calibrated, val_labels, metric)
    kept = [i for i, w in enumerate(weights) if w > 0]
    averaged = combine([calibrated[i] for i in kept], [weights[i] for i in kept])
    record = EnsembleRecord(members=[str(candidates.iloc[i]["trial_id"]) for i in kept],
                            weights=[round(float(weights[i]), 6) for i in kept],
                            checkpoints=[folder.relative(members[i].location) for i in kept],
                            temperatures=[members[i].temperature for i in kept],
                            temperature=fit_temperature(averaged, val_labels), metric=metric,
                            val_scores=classification_metrics(val_labels, averaged), data_fingerprint=data.fingerprint)
    folder.write_text(runfolder.ENSEMBLE, record.to_json())
    return EnsembleModel([members[i] for i in kept], record, folder.uri())


def ensemble_evaluation(cfg: ExperimentConfig, evaluable: pd.DataFrame, data: CachedDataset, split: pd.DataFrame,
                        folder, temperatures: dict[str, float], echo: Callable[[str], None] = print,
                        device=None) -> tuple[TestFigures, list[dict], pd.DataFrame] | None:
    """The ensemble of the best ``evaluate.ensemble`` evaluable trials, selected on the validation
    split and scored once on the test split: (its TestFigures, its evaluation rows, its test
    predictions); None, said in a line, when there are fewer than two trials to choose from."""
    count = cfg.evaluate.ensemble
    candidates = evaluable.head(count)
    if count < 2 or len(candidates) < 2:
        if count >= 2:
            echo(f"[leuktune] no ensemble: {len(candidates)} trial(s) with a checkpoint, it needs 2")
        return None
    models = [load_model(row, device=device) for _, row in candidates.iterrows()]
    ensemble = build_ensemble(cfg, candidates, models, data, folder, temperatures)
    record = ensemble.record
    test_rows = data.indices("test")
    labels, groups = data.labels[test_rows], split["group"].to_numpy()[test_rows]
    probs = ensemble.split_probabilities(data, "test")  # the test split's one read, after selection
    columns, figures, patient_line = test_figures(ENSEMBLE_ID, labels, probs, groups, record.temperature, cfg)
    predictions = pd.DataFrame({"trial_id": ENSEMBLE_ID, "row": test_rows, "label": labels,
                                "probs": list(probs.astype(np.float64)),
                                "path": split["path"].to_numpy()[test_rows]})
    members = ", ".join(f"{t} x {w:.2f}" for t, w in zip(record.members, record.weights))
    echo(f"[leuktune] ensemble of {len(record.members)} ({members}): validation "
         f"{record.metric} {record.val_scores[record.metric.removeprefix('val_')]:.4f}; test {line(columns)}"
         + (f"; {patient_line}" if any(f["variant"] == VARIANT for f in figures) else ""))
    return columns, figures, predictions
