"""``python -m leuktune.predict``: runs ``leuktune.cli.predict`` (this module only starts it)."""

if __name__ == "__main__":
    import sys

    from leuktune.cli.predict import main

    sys.exit(main())
