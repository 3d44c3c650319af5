"""The ``msakit`` parser, built from the command modules, and :func:`main`.

Bad input prints one line ``error: ...`` on stderr and exits with status 2, no traceback; every
other failure is one line too (:mod:`msakit.core.guard`). Before a command runs, every path its
command line declares goes to :func:`msakit.core.safety.check_plan`, the one place that decides
what a command may read and write.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from msakit import __version__
from msakit.commands import (
    analyze,
    bench,
    config,
    convert,
    demo,
    evaluate,
    extract,
    import_weights,
    merge,
    plot,
    predict,
    pretrain_adapters,
    report,
    retokenize,
    synth,
    train,
    tune,
)
from msakit.commands.arguments import Parser, declared_paths, resolve_aliases
from msakit.core.guard import run_guarded
from msakit.core.safety import check_plan
from msakit.models.registry import model_names, model_spec
from msakit.training.provenance import command_line

COMMANDS: tuple[ModuleType, ...] = (
    demo, synth, train, evaluate, predict, convert, bench, pretrain_adapters, report, plot,
    tune, import_weights, extract, analyze, merge, retokenize, config,
)
"""The sub-commands, in the order ``msakit --help`` lists them."""


def build_parser(commands: Sequence[ModuleType] = COMMANDS) -> argparse.ArgumentParser:
    """The ``msakit`` parser with a sub-parser per command module (``add_parser``)."""
    titles = [model_spec(n).title or n for n in model_names()]
    parser = Parser(prog="msakit", description="Multimodal sentiment analysis: "
                    f"{', '.join(titles[:-1])} and {titles[-1]}.")
    parser.add_argument("--version", action="version", version=f"msakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in commands:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, commands: Sequence[ModuleType] = COMMANDS) -> int:
    """Run ``msakit ARGV``; return the exit status (every failure is one ``error:`` line)."""

    def run() -> int:
        parser = build_parser(commands)
        args = parser.parse_args(argv)
        if args.command is None:  # `msakit` alone: the usage and the command list
            parser.print_help()
            return 0
        reads, writes = declared_paths(parser, args)  # before the command touches anything
        check_plan(reads, writes, overwrite=getattr(args, "overwrite", False),
                   resume=getattr(args, "resume", False))
        resolve_aliases(parser, args)  # `convert FILE` -> --data FILE (both were checked)
        command = {c.NAME: c for c in commands}[args.command]
        with command_line(["msakit", *(sys.argv[1:] if argv is None else argv)]):
            return command.run(args)  # recorded in a run's provenance

    return run_guarded(run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
