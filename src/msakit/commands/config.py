"""``msakit config show``: every setting of a model on a data set, with its documentation,
type, range, default and the preset's value; as YAML, a start for ``train --config``."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import (
    OUT_TABLE,
    Parser,
    add_dataset_arguments,
    add_model_argument,
    add_overwrite,
    add_preset_argument,
    arg,
    dataset_of,
    write_table,
)
from msakit.config import FLAG_KEYS
from msakit.config.listing import as_table, as_yaml, settings
from msakit.models.registry import preset

NAME = "config"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="the settings of a model on a data set (config show)")
    actions = p.add_subparsers(dest="what", required=True, parser_class=Parser)
    f = actions.add_parser(
        "show", help="every setting (--set KEY) with its documentation, type, range, default "
        "and the preset's value; --format yaml writes a config.yaml for train --config")
    add_model_argument(f)
    add_dataset_arguments(f)
    add_preset_argument(f)
    f.add_argument("--format", default="table", choices=["table", "yaml"],
                   help="aligned columns, or a commented config.yaml for 'train --config'")
    arg(f, "--out", role=OUT_TABLE, help="write it to this file ('-' or left out: print it)")
    add_overwrite(f)


def run(args: argparse.Namespace) -> int:
    config = preset(args.model, dataset_of(args), args.preset)
    listed = settings(config, refused=FLAG_KEYS)
    text = as_yaml(config, listed) if args.format == "yaml" else as_table(listed, args.preset)
    write_table(args.out, text)
    return 0
