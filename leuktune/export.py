"""``python -m leuktune.export``: runs ``leuktune.cli.export`` (this module only starts it; the
library it calls is ``leuktune.exporting``)."""

if __name__ == "__main__":
    import sys

    from leuktune.cli.export import main

    sys.exit(main())
