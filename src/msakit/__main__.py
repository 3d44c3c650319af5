"""``python -m msakit`` (what ``torchrun ... -m msakit train ...`` runs)."""

try:  # first: a Ctrl-C at any moment before msakit's own handler is one line, not a traceback
    import sys

    from msakit.cli import main

    status = main()
except KeyboardInterrupt:  # Ctrl-C while Python loads the command line
    import sys

    print("error: interrupted (Ctrl-C)", file=sys.stderr)
    status = 130

sys.exit(status)
