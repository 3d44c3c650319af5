"""Errors that msakit reports to its users."""

from __future__ import annotations

import sys

MAX_LINE = 1000
"""The most characters of one ``error:`` (or ``warning:``) line: a message that quotes user
data (a file name, a value, a parser's complaint) is cut in its middle to this length."""


def _escaped(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """``text`` as one bounded line: line breaks and other control characters are shown
    escaped (``\\n``), and a text longer than ``limit`` keeps its start and its end around a
    note of its length."""
    text = str(text)
    if len(text) <= limit:
        line = _escaped(text)
        if len(line) <= limit:
            return line
    keep = limit // 2
    head, tail = _escaped(text[:keep])[:keep], _escaped(text[-keep:])[-keep:]
    return f"{head} ... [{len(text)} characters in all, cut to {limit}] ... {tail}"


class MsakitError(Exception):
    """A user-facing error: bad input data, a bad option, a missing file.

    The message is one line that says what is wrong and where (file, split, key and first
    bad sample where that applies). The command line prints it as ``error: <message>`` and
    exits with status 2, without a traceback. However much user data it quotes, the message
    is kept as one line of at most :data:`MAX_LINE` characters (:func:`one_line`).
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(message) if isinstance(message, str) else message, *args)


class TrainingDiverged(MsakitError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def warn(line: str | None) -> None:
    """A ``warning:`` line on stderr (nothing for None)."""
    if line is not None:
        print(line, file=sys.stderr, flush=True)
