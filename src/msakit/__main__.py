"""``python -m msakit`` (what ``torchrun ... -m msakit train ...`` runs).

SIGINT, SIGTERM and SIGHUP end the command as Ctrl-C does from the first import on
(:func:`msakit.guard.catching_signals`)."""

import sys

from msakit.guard import catching_signals

with catching_signals() as signals:
    try:
        from msakit.cli import main
    except KeyboardInterrupt as exc:  # a signal while Python loads the command line
        sys.exit(signals.report(exc))
    sys.exit(main())
