"""``msakit synth``: a synthetic MMSA feature file with the real shapes."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import OUT_FILE, add_overwrite, arg
from msakit.config.datasets import synthetic_names

NAME = "synth"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="write a synthetic MMSA feature file with the real shapes")
    p.add_argument("--like", required=True, choices=synthetic_names(),
                   help="the named data set whose standard file's shapes to copy")
    p.add_argument("--n", required=True, nargs=3, type=int, metavar=("TRAIN", "VALID", "TEST"))
    arg(p, "--out", role=OUT_FILE, required=True,
         help="output file: FILE.npz (code-free) or an MMSA pickle (any other name)")
    add_overwrite(p)
    p.add_argument("--seed", "--seeds", type=int, default=0, help="random seed of the generator")
    p.add_argument("--text-features", action="store_true",
                   help="also write 'text', precomputed text features (N, Lt, 768), for the "
                   "models that read them instead of a text encoder")


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api

    path = api.synth(args.like, tuple(args.n), args.out, seed=args.seed,
                     text_features=args.text_features)
    print(f"wrote {path} ({args.like}-shaped: {' / '.join(map(str, args.n))} samples)")
    return 0
