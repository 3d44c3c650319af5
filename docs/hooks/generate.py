"""MkDocs hook: pages generated at build time from the code, so that no page keeps a copy.

- ``reference/cli.md``: every sub-command's usage and arguments, from ``msakit.cli``'s parsers;
- ``models/index.md`` and ``models/NAME.md``: a card per registered model, from its
  ``ModelSpec`` (paper, inputs, hyperparameters with their documentation, type, range and
  default, the presets per data set, importers).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re

from mkdocs.structure.files import File

os.environ.setdefault("COLUMNS", "100")  # argparse wraps usage lines at the terminal's width


_GENERATED = re.compile(r"<!-- generated: ([\w.]+):(\w+) -->")


def on_page_markdown(markdown, page, config, files):
    """``<!-- generated: module:function -->`` in a page: the Markdown that function returns
    (a table kept once, in code, such as CLGSI's paper-vs-authors differences)."""

    def render(match: re.Match) -> str:
        module = importlib.import_module(match.group(1))
        return getattr(module, match.group(2))()

    return _GENERATED.sub(render, markdown)


def on_config(config):
    """The Models section lists every registered model's card."""
    from msakit.models.registry import model_names, model_spec

    cards = [{"Overview": "models/index.md"}]
    cards += [{model_spec(n).title or n: f"models/{n}.md"} for n in model_names()]
    for entry in config.nav:
        for section in entry.values() if isinstance(entry, dict) else ():
            for i, item in enumerate(section if isinstance(section, list) else ()):
                if item == {"Models": "models/index.md"}:
                    section[i] = {"Models": cards}
    return config


def on_files(files, config):
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    from msakit.models.registry import model_names, model_spec

    specs = [model_spec(name) for name in model_names()]
    files.append(File.generated(config, "models/index.md", content=models_index(specs)))
    for spec in specs:
        files.append(File.generated(config, f"models/{spec.name}.md", content=model_card(spec)))
    return files


# --------------------------------------------------------------------------- command line
def _cell(text: object) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text.replace("[", "\\[").replace("]", "\\]")


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | values | default | what |", "| --- | --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        if action.choices:
            values = " \\| ".join(f"`{c}`" for c in action.choices)
        elif action.nargs == 0:
            values = "flag"
        else:
            values = f"`{action.metavar or action.dest.upper()}`"
            if action.nargs in ("+", "*"):
                values += " ..."
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) else f"`{default}`"
        required = " (required)" if action.required and action.option_strings else ""
        help_text = (action.help or "") % {"default": default} if action.help else ""
        rows.append(f"| {names}{required} | {values} | {_cell(shown)} | {_cell(help_text)} |")
    return rows


def _command_section(path: str, help_text: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"## `{path}`", "", help_text[:1].upper() + help_text[1:] + "." if help_text else "",
             "", "```text", parser.format_usage().strip(), "```", ""]
    lines += _arguments(parser)
    lines.append("")
    for name, sub_help, sub in _subcommands(parser):
        lines += _command_section(f"{path} {name}", sub_help, sub)
    return lines


def cli_page() -> str:
    from msakit.cli import build_parser

    parser = build_parser()
    lines = ["# Command line", "", "Generated from `msakit`'s own parsers (`msakit COMMAND --help`"
             " prints the same).", "", "```text", parser.format_usage().strip(), "```", ""]
    for name, help_text, sub in _subcommands(parser):
        lines += _command_section(f"msakit {name}", help_text, sub)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- model cards
def models_index(specs) -> str:
    lines = ["# Models", "", "One card per model of the registry (`msakit train --model NAME`).",
             "", "| model | paper | text input | data sets | presets |",
             "| --- | --- | --- | --- | --- |"]
    for spec in specs:
        lines.append(f"| [{spec.title or spec.name}]({spec.name}.md) | {_cell(spec.paper)} | "
                     f"{spec.text_input} | {', '.join(spec.datasets())} | "
                     f"{', '.join(spec.preset_names())} |")
    return "\n".join(lines) + "\n"


def _range(meta: dict) -> str:
    if meta.get("choices"):
        return " \\| ".join(f"`{c}`" for c in meta["choices"])
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    return f"[{'' if low is None else low}, {'' if high is None else high})"


def _settings(spec) -> list[str]:
    rows = ["| setting | type | default | range | what |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(spec.config):
        meta = dict(f.metadata)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append(f"| `{f.name}` | `{_cell(kind)}` | `{_cell(default)}` | {_range(meta)} | "
                    f"{_cell(meta.get('doc', ''))} |")
    return rows


def _presets(spec) -> list[str]:
    lines = []
    for preset in spec.preset_names():
        entries = spec.presets if preset == "paper" else spec.named_presets.get(preset, {})
        lines += [f"### `--preset {preset}`", "", "| data set | run settings | hyperparameters |",
                  "| --- | --- | --- |"]
        for dataset, entry in entries.items():
            run = ", ".join(f"`{k}={v}`" for k, v in dict(entry.get("run", {})).items())
            model = ", ".join(f"`{k}={v}`" for k, v in dict(entry.get("model", {})).items())
            lines.append(f"| {dataset} | {_cell(run)} | {_cell(model)} |")
        lines.append("")
    return lines


def model_card(spec) -> str:
    lines = [f"# {spec.title or spec.name}", "", f"`--model {spec.name}`" +
             (f" — {spec.paper}" if spec.paper else ""), "",
             "Text input: " + ("a Hugging Face text encoder reads the token ids (`text_bert`)."
                               if spec.text_input == "encoder" else
                               "the file's precomputed `text` features (no text encoder)."), "",
             "## Hyperparameters", "",
             "`--set NAME=VALUE`; the defaults are the paper's values.", ""]
    lines += _settings(spec)
    lines += ["", "## Presets", "", "What each preset changes from the defaults, per data set.", ""]
    lines += _presets(spec)
    if spec.search_space:
        lines += ["## Search space (`msakit tune`)", "", "| setting | range |", "| --- | --- |"]
        lines += [f"| `{k}` | `{_cell(v)}` |" for k, v in spec.search_space.items()]
        lines.append("")
    if spec.imports:
        lines += ["## Weight import", "", "`msakit import-weights --from` " +
                  ", ".join(f"`{s}`" for s in spec.imports), ""]
    return "\n".join(lines) + "\n"
