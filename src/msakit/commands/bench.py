"""``msakit bench``: training throughput and peak memory."""

from __future__ import annotations

import argparse
import json

from msakit.commands.arguments import (
    ENCODER,
    IN_FILE,
    SET_HELP,
    TEXT,
    TEXT_ENCODER_HELP,
    add_dataset_arguments,
    add_model_argument,
    add_preset_argument,
    arg,
    dataset_of,
)

NAME = "bench"
"""A command that trains: msakit's CPU speed settings go before its ``--set`` values."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="measure training throughput and peak memory")
    add_model_argument(p)
    add_dataset_arguments(p)
    arg(p, "--data", role=IN_FILE, required=True)
    p.add_argument("--batch", type=int)
    p.add_argument("--epochs", type=int, default=1, help="epochs timed after the warm-up")
    p.add_argument("--max-steps", type=int, help="stop timing after this many steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP)
    add_preset_argument(p)
    arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--flops", action="store_true",
                   help="also measure the text encoder's and the training step's share of "
                   "the machine's fp32 matmul peak")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit.bench import bench

    result = bench(
        args.model, dataset_of(args), args.data, batch=args.batch, epochs=args.epochs,
        text_encoder=args.text_encoder, overrides=args.set, warmup_steps=args.warmup_steps,
        max_steps=args.max_steps, flops=args.flops, preset=args.preset,
    )
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key.ljust(width)}  {value}")
    return 0
