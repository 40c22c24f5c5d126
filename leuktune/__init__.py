"""leuktune: search for the best blood-smear image classifier with Ray Tune + Ray Train.

The public API (each name is imported on first use, so ``import leuktune`` stays fast)::

    import leuktune
    leuktune.search(overrides=["search.num_samples=2"])       # ranked leaderboard (DataFrame)
    run = leuktune.Run.open("runs/synthetic-default")         # a run folder, wherever it is now
    run.leaderboard(); run.model().evaluate("test"); run.predict(["a.png"]); run.report()

- ``Run.open(path_or_uri)``: a run and its verbs: ``leaderboard()``, ``history()``,
  ``model(trial=None)``, ``evaluate(...)``, ``report(...)``, ``predict(images, ...)``, ``export(...)``.
- ``search(config=None, overrides=(), *, address=None)``: run a search, return its leaderboard.
- ``check_data(config=None, overrides=())``: what the data looks like to a search (DataReport).
- ``load_config(path=None, overrides=())``: the validated ``ExperimentConfig``.
- ``load_leaderboard(run_dir_or_paths)``: one or several runs' leaderboards, ranked.
- ``load_model(checkpoint, *, device=None, trial=None)``: a trained model (a checkpoint folder, a leaderboard row, or a
  run folder's best trial; ``trial="ensemble"``: the weighted ensemble of its best trials):
  ``.predict(images)``, ``.evaluate(split)``.
- ``evaluate(run, *, top=None, refit_folds=None, external=None)``: ``Run.open(run).evaluate(...)``, the
  best trials scored once on the test split (``refit_folds=K``: and retrained on K folds);
  ``external=ExternalSet(root, source, classes)`` (or a folder): on another dataset.
"""

import importlib
import os

# Ray Train V2 is the API leuktune is written against (the default since Ray 2.5x);
# set it before any ray.train import in every process that imports leuktune.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

__version__ = "0.1.0"

# name -> (module, attribute)
_API = {
    "Run": ("leuktune.run", "Run"),
    "search": ("leuktune.tuning.driver", "search"),
    "check_data": ("leuktune.data.check", "check_data"),
    "load_config": ("leuktune.config", "load"),
    "load_leaderboard": ("leuktune.leaderboard", "load"),
    "load_model": ("leuktune.trained", "load_model"),
    "evaluate": ("leuktune.run", "evaluate"),
    "ExternalSet": ("leuktune.evaluation.external", "ExternalSet"),
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'leuktune' has no attribute {name!r}; the API is {', '.join(_API)}")
    module, attribute = _API[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__():
    return sorted([*globals(), *_API])
