"""``python -m leuktune.evaluate``: runs ``leuktune.cli.evaluate`` (this module only starts it).

Never imported: bound on the package, the module would hide ``leuktune.evaluate``, the function of the
Python API that shares its name; so an import is refused, and ``python -m`` runs it as ``__main__``.
"""

if __name__ == "__main__":
    import sys

    from leuktune.cli.evaluate import main

    sys.exit(main())
else:
    raise ImportError("leuktune.evaluate is the command line's start (python -m leuktune.evaluate); from Python "
                      "use leuktune.evaluate(...) or import leuktune.cli.evaluate")
