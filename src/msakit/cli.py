"""``msakit.cli``: the command line's stable name (the ``msakit`` console script,
``python -m msakit``, tests and the docs' generator use it). The commands live in
:mod:`msakit.commands` (one module per sub-command); this module re-exports their entry points.
"""

from msakit.commands.main import build_parser, main

__all__ = ["build_parser", "main"]
