"""``python -m leuktune.search``: runs ``leuktune.cli.search`` (this module only starts it).

Never imported: bound on the package, the module would hide ``leuktune.search``, the function of the
Python API that shares its name; so an import is refused, and ``python -m`` runs it as ``__main__``.
"""

if __name__ == "__main__":
    import sys

    from leuktune.cli.search import main

    sys.exit(main())
else:
    raise ImportError("leuktune.search is the command line's start (python -m leuktune.search); from Python "
                      "use leuktune.search(...) or import leuktune.cli.search")
