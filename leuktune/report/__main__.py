"""``python -m leuktune.report``: runs ``leuktune.cli.report`` (this module only starts it)."""

if __name__ == "__main__":
    import sys

    from leuktune.cli.report import main

    sys.exit(main())
