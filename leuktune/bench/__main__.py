"""``python -m leuktune.bench``: runs ``leuktune.cli.bench`` (this module only starts it)."""

if __name__ == "__main__":
    import sys

    from leuktune.cli.bench import main

    sys.exit(main())
