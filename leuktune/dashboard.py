"""``python -m leuktune.dashboard RUN``: runs ``leuktune.cli.dashboard`` (this module only starts it)."""

if __name__ == "__main__":
    import sys

    from leuktune.cli.dashboard import main

    sys.exit(main())
