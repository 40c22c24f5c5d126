"""``python -m leuktune.adapt``: runs ``leuktune.cli.adapt`` (this module only starts it; the library it
calls is ``leuktune.adapting``)."""

if __name__ == "__main__":
    import sys

    from leuktune.cli.adapt import main

    sys.exit(main())
