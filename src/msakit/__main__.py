"""``python -m msakit`` (what ``torchrun ... -m msakit train ...`` runs).

SIGINT, SIGTERM and SIGHUP end the command as Ctrl-C does from the first import on
(:func:`msakit.core.guard.catching_signals`); the whole body is under one ``try``, so a Ctrl-C at
any moment before msakit's handler is installed is one line, not a traceback."""

try:
    import sys

    from msakit.core.guard import catching_signals

    with catching_signals() as signals:
        try:
            from msakit.cli import main
        except KeyboardInterrupt as exc:  # a signal while Python loads the command line
            sys.exit(signals.report(exc))
        status = main()
except KeyboardInterrupt:  # before msakit's handler was installed
    import sys

    print("error: interrupted (Ctrl-C)", file=sys.stderr)
    status = 130

sys.exit(status)
