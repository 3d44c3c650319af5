"""``msakit pretrain-adapters``: a model's knowledge adapters pretrained on an external feature
file (the model's adapter stage, before ``train --adapters``)."""

from __future__ import annotations

import argparse
import os

from msakit.commands.arguments import (
    ENCODER,
    IN_FILE,
    OUT_ADAPTERS,
    TEXT,
    TEXT_ENCODER_HELP,
    add_dataset_arguments,
    add_model_argument,
    add_overwrite,
    add_preset_argument,
    add_quiet,
    arg,
    dataset_of,
)

NAME = "pretrain-adapters"
"""A command that trains: msakit's CPU speed settings go before its ``--set`` values."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME,
        help="pretrain a model's knowledge adapters on an external MMSA feature file (its "
        "stage before train --adapters)",
    )
    add_model_argument(p, adapters=True)
    add_dataset_arguments(p, "the target data set whose preset to use")
    arg(p, "--data", role=IN_FILE, required=True, help="the external data set's feature file")
    arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP + "; use the same one for train")
    add_preset_argument(p, ["paper"])
    p.add_argument("--epochs", type=int, help="pretraining epochs (default 10)")
    p.add_argument("--batch", type=int, help="global batch size")
    p.add_argument("--seed", "--seeds", type=int,
                   help="random seed (default: the preset's first seed)")
    arg(p, "--out", role=OUT_ADAPTERS, required=True, help="folder for adapters.pt")
    add_overwrite(p)
    arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set adapter_dim=128")
    add_quiet(p)


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit.training.stages import pretrain_adapters

    result = pretrain_adapters(
        dataset_of(args),
        args.data,
        out=args.out,
        model=args.model,
        text_encoder=args.text_encoder,
        epochs=args.epochs,
        batch=args.batch,
        overrides=args.set,
        seed=args.seed,
        quiet=args.quiet,
        preset=args.preset,
        overwrite=args.overwrite,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {result.adapters} (best validation MAE {result.valid['MAE']:.4f} "
              f"at epoch {result.epoch})")
    return 0
