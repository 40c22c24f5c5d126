"""The final evaluation's stages, the only readers of the test split: ``leuktune.Run.evaluate``
(``driver.evaluate``) from Python, ``python -m leuktune.evaluate`` (``leuktune.cli.evaluate``) from a shell."""
