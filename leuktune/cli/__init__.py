"""Every command line (``leuktune <verb>``, or ``python -m leuktune.<verb>``): argument parsing and
printing over the verbs of the Python API, each ending on a mistake through ``leuktune.errors.command``.
``main.py`` is the ``leuktune`` console script; the modules that ``python -m`` runs
(``leuktune/search.py``, ``leuktune/data/__main__.py``, ...) only call these."""
