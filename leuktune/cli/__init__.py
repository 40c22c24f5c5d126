"""Every command line (``python -m leuktune.<verb>``): argument parsing and printing over the verbs
of the Python API, each ending on a mistake through ``leuktune.errors.command``. The modules that
``python -m`` runs (``leuktune/search.py``, ``leuktune/data/__main__.py``, ...) only call these."""
