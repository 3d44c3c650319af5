"""``msakit evaluate``: a checkpoint's metrics on one split (JSON), or a run folder's seeds and
their mean ± std (the table training prints)."""

from __future__ import annotations

import argparse
from pathlib import Path

from msakit.commands.arguments import CHECKPOINT, IN_FILE, OUT_FILE, add_overwrite, arg

NAME = "evaluate"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="metrics of a checkpoint, or of every seed of a run folder "
                       "with mean ± std, on one split")
    arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a seed folder (model.safetensors + config.json), its "
                   "model.safetensors, a best.pt, or a run folder (every seed)")
    arg(p, "--data", role=IN_FILE, required=True, help="MMSA feature file (.pkl or .npz)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")
    arg(p, "--out", role=OUT_FILE, help="also write the table: CSV, or JSON for a .json name")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api
    from msakit.evaluation.metrics import metrics_json, rounded
    from msakit.evaluation.tables import print_results

    result = api.evaluate(args.checkpoint, args.data, args.split)
    if isinstance(result, list):  # a run folder's seeds, then mean and std
        rows = result
        print_results(rows)
    else:
        rows = [{"seed": _seed_label(Path(args.checkpoint)), **rounded(result)}]
        print(metrics_json(rounded(result)))  # an undefined metric is null (api.evaluate warns)
    if args.out:
        api.write_results_table(args.out, rows)
        print(f"wrote {args.out}")
    return 0


def _seed_label(checkpoint: Path) -> str:
    """How the table names one checkpoint: its seed folder's seed, else its path."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    seeds = [folder] if folder.name.startswith("seed-") else sorted(folder.glob("seed-*"))
    return seeds[0].name.removeprefix("seed-") if len(seeds) == 1 else str(checkpoint)
