"""``msakit demo``: a model trained on built-in synthetic data."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import OUT_DEMO, add_overwrite, add_quiet, arg
from msakit.models.registry import DEMO_MODEL, model_spec

NAME = "demo"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="train a model on built-in synthetic data (a few minutes)")
    arg(p, "--out", role=OUT_DEMO, help="run folder (default: a new temporary folder)")
    add_overwrite(p)
    add_quiet(p)


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api
    from msakit.reporting import print_results

    print(f"msakit demo: {model_spec(DEMO_MODEL).title} on synthetic MOSI-shaped data "
          "(256/64/96 samples, "
          "50/500/375 frames) with the packaged all-MiniLM-L6-v2 text encoder, 2 seeds, "
          "length-bucketed batches for speed", flush=True)
    result = api.demo(out=args.out, quiet=args.quiet, overwrite=args.overwrite)
    print(f"run folder: {result.out}")
    print_results(result.rows)
    return 0
