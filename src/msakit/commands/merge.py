"""``msakit merge``: ``msakit extract --shard`` parts joined into one file."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import IN_FILE, OUT_MERGE, add_overwrite, arg

NAME = "merge"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="join 'msakit extract --shard' parts into one file")
    arg(p, "parts", role=IN_FILE, nargs="+", metavar="PART", help="files from extract --shard i/n")
    arg(p, "--out", role=OUT_MERGE, required=True, help="output .npz")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    # lazy: the extraction stack loads when the command runs
    from msakit.extract.merge import merge

    counts = merge(args.parts, args.out)
    sizes = " / ".join(str(counts[s]) for s in ("train", "valid", "test"))
    print(f"wrote {args.out} ({sizes} train/valid/test clips from {len(args.parts)} parts)")
    return 0
