"""``msakit convert``: a pickle feature file rewritten as code-free npz."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import IN_FILE, OUT_FILE, add_overwrite, add_positional_alias, arg
from msakit.data.mmsa import convert_to_npz

NAME = "convert"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="rewrite a pickle feature file as code-free npz")
    add_positional_alias(p, "--data", "file", role=IN_FILE, metavar="FILE",
                         help="MMSA feature pickle")
    arg(p, "--out", role=OUT_FILE,
         required=True, help="output .npz (read with allow_pickle=False)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    ff = convert_to_npz(args.data, args.out)
    sizes = " / ".join(str(len(ff.splits[s])) for s in ("train", "valid", "test"))
    print(f"wrote {args.out} (code-free npz, {sizes} samples)")
    return 0
