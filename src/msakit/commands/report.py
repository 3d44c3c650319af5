"""``msakit report``: mean ± std over seeds of run folders, side by side."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import (
    IN_RUN,
    OUT_TABLE,
    add_overwrite,
    add_positional_alias,
    arg,
    table_format,
    write_table,
)

NAME = "report"
FORMATS = ("markdown", "latex", "csv", "json")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME, help="mean ± std over seeds of run folders, side by side, as the papers' tables"
    )
    add_positional_alias(p, "--run", "dirs", role=IN_RUN, many=True, metavar="DIR",
                         help="run folders (with results.csv)")
    p.add_argument("--format", choices=FORMATS,
                   help="table format (default: from --out's extension .md, .tex, .csv or "
                   ".json, else markdown)")
    p.add_argument("--label", default="auto", choices=["auto", "folder", "config"],
                   help="row labels: folder names, or the runs' distinguishing --set values")
    p.add_argument("--all-metrics", action="store_true",
                   help="also Acc-5 (MOSI/MOSEI) and Acc-3 (SIMS)")
    arg(p, "--out", role=OUT_TABLE,
        help="write the table to this file ('-' or left out: print it)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit.reporting.report import report

    fmt = table_format(args.out, args.format, FORMATS, "markdown")
    text = report(args.run, fmt=fmt, label=args.label, all_metrics=args.all_metrics)
    write_table(args.out, text)
    return 0
