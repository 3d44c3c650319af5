"""``msakit evaluate``: a checkpoint's metrics on one split (JSON), or a run folder's seeds and
their mean ± std (the table training prints); with ``--missing-rates``, one or more runs at
several missing-modality rates in one table (:mod:`msakit.reporting.missing`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from msakit.commands.arguments import (
    CHECKPOINT,
    IN_FILE,
    OUT_TABLE,
    add_overwrite,
    arg,
    table_format,
    write_table,
)
from msakit.core.errors import MsakitError

NAME = "evaluate"
FORMATS = ("csv", "json")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="metrics of a checkpoint, or of every seed of a run folder "
                       "with mean ± std, on one split")
    arg(p, "--checkpoint", role=CHECKPOINT, required=True, nargs="+", metavar="CHECKPOINT",
        help="a seed folder (model.safetensors + config.json), its model.safetensors, a "
        "best.pt, or a run folder (every seed); with --missing-rates, one or more of them")
    arg(p, "--data", role=IN_FILE, required=True, help="MMSA feature file (.pkl or .npz)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")
    p.add_argument("--missing-rates", nargs="+", type=float, metavar="R",
                   help="evaluate at each of these missing rates (MMSA's missing-modality "
                   "protocol: the share of each modality's positions dropped, in [0, 1)), "
                   "one table row per checkpoint and rate")
    arg(p, "--out", role=OUT_TABLE, help="also write the table: CSV, or JSON for a .json "
        "name; '-': the table alone on standard output")
    p.add_argument("--format", choices=FORMATS,
                   help="csv or json (default: from --out's extension, else csv)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api
    from msakit.evaluation.metrics import metrics_json, rounded
    from msakit.evaluation.tables import print_results

    fmt = table_format(args.out, args.format, FORMATS, "csv")
    if args.missing_rates is not None:
        return _missing_rates(args, fmt)
    if len(args.checkpoint) > 1:
        raise MsakitError("evaluate: several --checkpoint values need --missing-rates (a "
                          "table of runs at several missing rates); msakit report compares "
                          "finished runs")
    checkpoint = args.checkpoint[0]
    result = api.evaluate(checkpoint, args.data, args.split)
    table = args.out == "-"  # the table alone on standard output
    if isinstance(result, list):  # a run folder's seeds, then mean and std
        rows = result
        if not table:
            print_results(rows)
    else:
        rows = [{"seed": _seed_label(Path(checkpoint)), **rounded(result)}]
        if not table:  # an undefined metric is null (api.evaluate warns)
            print(metrics_json(rounded(result)))
    if args.out:  # '-': the table alone on standard output
        write_table(args.out, api.results_table_text(rows, fmt))
    return 0


def _missing_rates(args: argparse.Namespace, fmt: str) -> int:
    """``--missing-rates``: the table of every checkpoint at every rate, printed (markdown) or
    written as ``--out`` says."""
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit.reporting.missing import check_rates, missing_rate_table

    check_rates(args.missing_rates)  # before any checkpoint is read
    shown = fmt if args.out else "markdown"
    text = missing_rate_table(args.checkpoint, args.data, args.missing_rates,
                              split=args.split, fmt=shown)
    write_table(args.out, text)
    return 0


def _seed_label(checkpoint: Path) -> str:
    """How the table names one checkpoint: its seed folder's seed, else its path."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    seeds = [folder] if folder.name.startswith("seed-") else sorted(folder.glob("seed-*"))
    return seeds[0].name.removeprefix("seed-") if len(seeds) == 1 else str(checkpoint)
