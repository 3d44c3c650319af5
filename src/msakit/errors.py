"""Errors that msakit reports to its users."""


class MsakitError(Exception):
    """A user-facing error: bad input data, a bad option, a missing file.

    The message is one line that says what is wrong and where (file, split, key and first
    bad sample where that applies). The command line prints it as ``error: <message>`` and
    exits with status 2, without a traceback.
    """


class TrainingDiverged(MsakitError):
    """The loss became NaN or infinite; the message names the epoch and step."""
