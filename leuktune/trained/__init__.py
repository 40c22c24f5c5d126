"""Trained models as a researcher holds them after a search (``leuktune.load_model``): one protocol
(``base``) for a trial's network, a cross-validated trial's fold models, the run's ensemble of
either and a model adapted to a new lab (``adapted``), and one loader that recurses into composites (``loading``)."""

from leuktune.trained.adapted import AdaptedModel, AdaptedRecord
from leuktune.trained.base import Trained
from leuktune.trained.composite import Composite, EnsembleModel, FoldModel, combine
from leuktune.trained.loading import KINDS, load, load_ensemble, load_model, register, trial_row
from leuktune.trained.network import TrainedModel, load_network

__all__ = ["AdaptedModel", "AdaptedRecord",
           "Trained", "Composite", "EnsembleModel", "FoldModel", "combine", "KINDS", "load", "load_ensemble",
           "load_model", "register", "trial_row", "TrainedModel", "load_network"]
