"""Search backbones, heads and training hyperparameters: ``leuktune.search(config, overrides)``
from Python, ``python -m leuktune.search`` from a shell.

This package is itself callable (leuktune.callable_module), so that ``leuktune.search(...)``
runs a search whether or not the package was imported before. See ``search.driver.search``.
"""

from leuktune.callable_module import make_callable
from leuktune.search.driver import SearchError, search

make_callable(__name__, search)
__all__ = ["search", "SearchError"]
