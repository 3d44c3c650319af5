"""``msakit retokenize``: a feature file's token ids rewritten with another text encoder's
tokenizer."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import (
    ENCODER,
    IN_FILE,
    OUT_FILE,
    add_overwrite,
    add_positional_alias,
    arg,
)
from msakit.core.errors import MsakitError
from msakit.data.tokens import retokenize
from msakit.encoders.text import encoder_positions, load_tokenizer, resolve_text_encoder

NAME = "retokenize"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME, help="rewrite a feature file's token ids with another text encoder's "
        "tokenizer (from raw_text or a CSV id,text)",
    )
    add_positional_alias(p, "--data", "file", role=IN_FILE, metavar="FILE",
                         help="MMSA feature file (.pkl or .npz)")
    arg(p, "--text-encoder", role=ENCODER, required=True,
                   help="hub name, folder or 'minilm' whose tokenizer to apply")
    arg(p, "--texts", role=IN_FILE, metavar="CSV",
                   help="texts to tokenise instead of raw_text: a CSV with columns id,text, one "
                   "row per sample (e.g. English translations of SIMS); they become raw_text")
    p.add_argument("--max-length", type=int,
                   help="text length of the output (default: the file's); at most the number "
                   "of positions of the text encoder (512 for BERT)")
    arg(p, "--out", role=OUT_FILE, required=True, help="output .npz (code-free; not the input)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.text_encoder)
    if tokenizer is None:
        raise MsakitError(
            f"text encoder {resolve_text_encoder(args.text_encoder)!r} has no tokenizer (no "
            "tokenizer files in the folder, or not in the local Hugging Face cache)"
        )
    summary = retokenize(args.data, args.out, tokenizer, texts_csv=args.texts,
                         max_length=args.max_length,
                         positions=encoder_positions(args.text_encoder))
    note = f", {summary['truncated']} truncated" if summary["truncated"] else ""
    print(f"wrote {args.out} ({summary['samples']} samples tokenised by {args.text_encoder}, "
          f"text length {summary['length']}{note})")
    return 0
