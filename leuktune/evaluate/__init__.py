"""The final evaluation of a search: ``leuktune.evaluate(run, top=..., cv=...)`` from Python,
``python -m leuktune.evaluate RUN`` from a shell.

Like ``leuktune.search``, this package is itself callable, so that ``leuktune.evaluate(...)``
works whether or not the package was imported before. See ``evaluate.driver.evaluate``.
"""

from leuktune.callable_module import make_callable
from leuktune.evaluate.driver import evaluate

make_callable(__name__, evaluate)
__all__ = ["evaluate"]
