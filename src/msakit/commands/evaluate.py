"""``msakit evaluate``: a checkpoint's metrics on one split (JSON)."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import CHECKPOINT, IN_FILE, arg

NAME = "evaluate"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="metrics of a checkpoint on one split (JSON)")
    arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a seed folder (model.safetensors + config.json), its "
                   "model.safetensors, a best.pt, or a run folder with one seed")
    arg(p, "--data", role=IN_FILE, required=True, help="MMSA feature file (.pkl or .npz)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api
    from msakit.evaluation.metrics import metrics_json, rounded

    metrics = api.evaluate(args.checkpoint, args.data, args.split)
    print(metrics_json(rounded(metrics)))  # an undefined metric is null (api.evaluate warns)
    return 0
