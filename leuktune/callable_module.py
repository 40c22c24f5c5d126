"""A package that can be called like its main function: ``leuktune.search(...)``.

Importing a subpackage rebinds its name on the parent package, so a plain function
``leuktune.search`` would be replaced by the module the first time ``leuktune.search.driver``
(or any submodule) is imported. Making the module itself callable keeps ``leuktune.search(...)``
working whatever was imported before.
"""

from __future__ import annotations

import sys
import types
from typing import Callable


def make_callable(module_name: str, function: Callable) -> None:
    """Calling the module ``module_name`` calls ``function`` (whose docstring it shows)."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    CallableModule.__call__.__doc__ = function.__doc__
    sys.modules[module_name].__class__ = CallableModule
