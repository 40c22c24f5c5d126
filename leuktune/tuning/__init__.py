"""The search's machinery: Ray Tune trials suggested by Optuna and stopped by ASHA, recorded as
they end. ``leuktune.search(...)`` (``driver.search``) from Python, ``python -m leuktune.search``
(``leuktune.cli.search``) from a shell."""
