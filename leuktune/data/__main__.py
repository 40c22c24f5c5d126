"""``python -m leuktune.data``: runs ``leuktune.cli.data`` (this module only starts it)."""

if __name__ == "__main__":
    import sys

    from leuktune.cli.data import main

    sys.exit(main())
