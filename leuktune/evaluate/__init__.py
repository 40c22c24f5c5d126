"""The final evaluation of a search: ``leuktune.evaluate(run, top=..., cv=...)`` from Python,
``python -m leuktune.evaluate RUN`` from a shell.

Like ``leuktune.search``, this package is itself callable, so that ``leuktune.evaluate(...)``
works whether or not the package was imported before. See ``evaluate.run.evaluate``.
"""

import sys
import types

from leuktune.evaluate.run import evaluate


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


_CallableModule.__call__.__doc__ = evaluate.__doc__
sys.modules[__name__].__class__ = _CallableModule
__all__ = ["evaluate"]
