"""Search backbones, heads and training hyperparameters: ``leuktune.search(config, overrides)``
from Python, ``python -m leuktune.search`` from a shell.

This package is itself callable, so that ``leuktune.search(...)`` runs a search whether or
not the package was imported before (importing a subpackage rebinds its name on the parent;
a plain function of that name would be replaced by the module). See ``search.run.search``.
"""

import sys
import types

from leuktune.search.run import SearchError, search


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


_CallableModule.__call__.__doc__ = search.__doc__
sys.modules[__name__].__class__ = _CallableModule
__all__ = ["search", "SearchError"]
