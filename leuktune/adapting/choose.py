"""Which steps to adapt with, chosen by cross-validation on the lab's labelled cells alone.

The labelled cells are dealt into folds (whole groups, classes stratified; scikit-learn's
``StratifiedGroupKFold``). A candidate is tuned on all folds but one and predicts the one left out,
for each fold in turn, so that each labelled cell is predicted by a model that was not tuned on it;
the candidates are ranked by the balanced accuracy of those out-of-fold predictions, then by their
log loss, then by how little they change. The label-free steps read no label: they are computed once
on the labelled and unlabelled cells and shared by every fold.

The candidates that tune nothing or the head alone are all tried (the head is tuned on features
computed once a label-free setting); tuning the last stage group or the whole network costs passes
of the backbone, so those are tried with the label-free setting that scored best. Then the
temperature: re-fitted on the chosen candidate's out-of-fold predictions where, fitted on all folds
but one, it lowers the log loss of the fold left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from leuktune.adapting import tuning
from leuktune.adapting.networks import combined
from leuktune.adapting.plan import Candidate
from leuktune.metrics import classification_metrics
from leuktune.metrics.calibration import fit_temperature, rescale

if TYPE_CHECKING:
    from leuktune.adapting.adaptation import Adaptation

CHEAP = (None, "head")


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    probs: np.ndarray  # out-of-fold, uncalibrated at the top (as the source's probabilities)
    balanced_accuracy: float
    log_loss: float

    @property
    def rank(self) -> tuple:
        return (-round(self.balanced_accuracy, 9), round(self.log_loss, 9), self.candidate.cost)


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    refit: bool  # the temperature re-fitted
    temperature: float  # the re-fitted one (when refit)
    figures: dict[str, dict[str, float]]  # candidate (and temperature) -> its cross-validated figures
    how: str


def folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Held-out rows of each fold (at most ``k``; no more than the fewest groups of a class)."""
    fewest = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    k = max(2, min(k, fewest))
    dealer = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [held for _, held in dealer.split(np.zeros(len(labels)), labels, groups)]


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def _scored(candidate: Candidate, probs: np.ndarray, labels: np.ndarray, temperature: float) -> Scored:
    calibrated = rescale(probs, temperature)
    figures = classification_metrics(labels, calibrated)
    return Scored(candidate, probs, float(figures["balanced_accuracy"]), _log_loss(calibrated, labels))


def _cheap(adaptation: Adaptation, candidates: list[Candidate], held: list[np.ndarray],
           temperature: float) -> list[Scored]:
    """Each candidate tuning nothing or the head, out of fold, on features computed once a setting."""
    cells, plan = adaptation.lab.labelled, adaptation.plan
    y, out = cells.labels, []
    for setting in dict.fromkeys(c.label_free for c in candidates):
        adaptation.apply(setting)
        mine = [c for c in candidates if c.label_free == setting]
        views = plan.views if any(c.tuning == "head" for c in mine) else 1
        feats = {id(n.leaf): tuning.features(n, cells.pixels, views, plan.batch_size) for n in adaptation.networks}
        for candidate in mine:
            probs = np.zeros((len(y), len(adaptation.source.classes)))
            for rows in (held if candidate.tuning else [np.arange(len(y))]):
                fitted = np.setdiff1d(np.arange(len(y)), rows) if candidate.tuning else rows
                leaf = {}
                for n in adaptation.networks:
                    head = tuning.tune_head(n, feats[id(n.leaf)][fitted], y[fitted], plan, adaptation.seed) \
                        if candidate.tuning and n.tunable_head else n.classifier.head
                    leaf[id(n.leaf)] = tuning.head_probabilities(head, feats[id(n.leaf)][rows])
                probs[rows] = combined(adaptation.source, leaf)
            out.append(_scored(candidate, probs, y, temperature))
    return out


@torch.no_grad()
def _predicted(adaptation: Adaptation, pixels: np.ndarray) -> np.ndarray:
    leaf = {id(n.leaf): n.leaf.probabilities(pixels) for n in adaptation.networks}
    return combined(adaptation.source, leaf)


def _deep(adaptation: Adaptation, candidate: Candidate, held: list[np.ndarray], temperature: float) -> Scored:
    """A candidate tuning pixels (the last stage group, or the whole network), out of fold."""
    cells = adaptation.lab.labelled
    probs = np.zeros((len(cells), len(adaptation.source.classes)))
    for rows in held:
        adaptation.fit(candidate, cells.subset(np.setdiff1d(np.arange(len(cells)), rows)), step="choose")
        probs[rows] = _predicted(adaptation, cells.pixels[rows])
    return _scored(candidate, probs, cells.labels, temperature)


def _temperature(best: Scored, labels: np.ndarray, held: list[np.ndarray], temperature: float,
                 forced: bool) -> tuple[bool, float, dict[str, float]]:
    """Whether to re-fit the temperature (see the module's docstring), and the one fitted on all folds."""
    refit = np.zeros(len(labels))
    for rows in held:
        fitted = np.setdiff1d(np.arange(len(labels)), rows)
        scaled = rescale(best.probs[rows], fit_temperature(best.probs[fitted], labels[fitted]))
        refit[rows] = -np.log(np.clip(scaled[np.arange(len(rows)), labels[rows]], 1e-12, 1.0))
    kept = best.log_loss
    figures = {"log_loss_kept": kept, "log_loss_refit": float(refit.mean())}
    return forced or refit.mean() < kept, fit_temperature(best.probs, labels), figures


def choose(adaptation: Adaptation, temperature: float, echo: Callable[[str], None]) -> Choice:
    """The candidate (and temperature) to adapt with: by cross-validation on the labelled cells, or
    the one way asked (``Plan.choose`` off), with its figures."""
    plan, cells = adaptation.plan, adaptation.lab.labelled
    candidates = plan.candidates()
    if not plan.choose and "temperature" not in plan.steps:
        return Choice(candidates[0], False, temperature, {}, "as asked")
    adaptation.seen.saw("choose", cells)
    held = folds(cells.labels, cells.group_ids(), plan.folds, adaptation.seed)
    cheap = [c for c in candidates if c.tuning in CHEAP]
    scored = _cheap(adaptation, cheap, held, temperature) if cheap else []
    best_setting = min(scored, key=lambda s: s.rank).candidate.label_free if scored else candidates[0].label_free
    for candidate in candidates:
        if candidate.tuning not in CHEAP and (not plan.choose or candidate.label_free == best_setting):
            scored.append(_deep(adaptation, candidate, held, temperature))
    best = min(scored, key=lambda s: s.rank)
    figures = {s.candidate.name: {"balanced_accuracy": s.balanced_accuracy, "log_loss": s.log_loss} for s in scored}
    refit, fitted, temperature_figures = (False, temperature, {})
    if "temperature" in plan.steps:
        refit, fitted, temperature_figures = _temperature(best, cells.labels, held, temperature, not plan.choose)
        figures["temperature"] = {**temperature_figures, "fitted": fitted}
    how = (f"cross-validation on the {len(cells)} labelled cells ({len(held)} folds, {len(scored)} candidates)"
           if plan.choose else f"as asked (the temperature on out-of-fold predictions, {len(held)} folds)")
    echo(f"[leuktune] chose {best.candidate.name}{' + temperature' if refit else ''} by {how}: balanced accuracy "
         f"{best.balanced_accuracy:.3f} out of fold")
    return Choice(best.candidate, refit, fitted, figures, how)
