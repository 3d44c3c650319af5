"""``msakit import-weights``: a reference implementation's saved weights as an msakit checkpoint."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import (
    ENCODER,
    IN_FILE,
    OUT_FILE,
    TEXT,
    add_model_argument,
    add_overwrite,
    arg,
)
from msakit.config.datasets import dataset_names
from msakit.importing import import_sources, import_weights

NAME = "import-weights"


def add_parser(sub: argparse._SubParsersAction) -> None:
    sources = import_sources()
    p = sub.add_parser(
        NAME,
        help="a reference implementation's saved weights as an msakit checkpoint",
    )
    p.add_argument("--from", dest="source", required=True, choices=sorted(sources),
                   help="the code base that saved the weights (a state_dict of its AMIO "
                   "module): " + "; ".join(f"{s} for {', '.join(m)}" for s, m in
                                          sorted(sources.items())))
    add_model_argument(p)
    p.add_argument("--dataset", required=True, choices=dataset_names(),
                   help="the named data set the weights were trained on")
    arg(p, "--weights", role=IN_FILE,
         required=True, help="the reference's saved state_dict (.pth)")
    arg(p, "--data", role=IN_FILE,
         required=True, help="an MMSA feature file of the dataset (sizes)")
    arg(p, "--text-encoder", role=ENCODER,
                   help="folder or hub name of the text encoder the weights were trained with "
                   "(models with a text encoder)")
    arg(p, "--out", role=OUT_FILE, required=True, help="the msakit checkpoint to write (.pt)")
    add_overwrite(p)
    arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the reference that differs from the preset")


def run(args: argparse.Namespace) -> int:
    path = import_weights(
        args.source, args.model, args.dataset, weights=args.weights, data=args.data,
        text_encoder=args.text_encoder, out=args.out, overrides=args.set,
    )
    print(f"wrote {path} ({args.model} on {args.dataset}, weights from {args.source})")
    return 0
