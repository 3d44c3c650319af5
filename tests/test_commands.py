"""The command modules (``msakit.commands``): every sub-command is a module with ``NAME``,
``add_parser(sub)`` and ``run(args)``; a command added from a test file alone gets the parser,
the declared-path checks and the one-line errors; building the parser loads no command's work."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import msakit.commands
from msakit.commands.arguments import OUT_FILE, TEXT, add_overwrite, arg
from msakit.commands.main import COMMANDS, build_parser, main
from msakit.core.files import write_text_atomic

COMMANDS_DIR = Path(msakit.commands.__file__).parent


def _shout() -> types.ModuleType:
    """A command written in this file only: ``msakit shout --text T --out FILE``."""
    module = types.ModuleType("shout")
    module.NAME = "shout"

    def add_parser(sub: argparse._SubParsersAction) -> None:
        p = sub.add_parser("shout", help="write a text in capitals")
        arg(p, "--text", role=TEXT, required=True, help="what to shout")
        arg(p, "--out", role=OUT_FILE, required=True, help="output text file")
        add_overwrite(p)

    def run(args: argparse.Namespace) -> int:
        write_text_atomic(args.out, args.text.upper())
        print(f"wrote {args.out}")
        return 0

    module.add_parser, module.run = add_parser, run
    return module


def test_a_command_added_from_a_test_file(tmp_path, capsys):
    commands = (*COMMANDS, _shout())
    assert "shout" in build_parser(commands).format_help()
    out = tmp_path / "loud.txt"
    assert main(["shout", "--text", "hello", "--out", str(out)], commands=commands) == 0
    assert out.read_text() == "HELLO"
    # its --out is declared, so the one place that decides refuses to replace it unasked
    assert main(["shout", "--text", "again", "--out", str(out)], commands=commands) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--out" in err
    assert out.read_text() == "HELLO"
    assert main(["shout", "--text", "again", "--out", str(out), "--overwrite"],
                commands=commands) == 0
    assert out.read_text() == "AGAIN"


def test_every_command_module_is_listed_and_offers_the_three_names():
    listed = {c.__name__.rsplit(".", 1)[-1] for c in COMMANDS}
    files = {p.stem for p in COMMANDS_DIR.glob("*.py")} - {"__init__", "arguments", "main"}
    assert listed == files
    names = [c.NAME for c in COMMANDS]
    assert len(set(names)) == len(names)
    for command in COMMANDS:
        assert callable(command.add_parser) and callable(command.run), command.__name__
    sub = build_parser()._subparsers._group_actions[0]
    assert list(sub.choices) == names


def test_building_the_parser_loads_no_command_work():
    """``msakit --help`` builds every sub-parser; the API, the trainer, the sweeps, the plots,
    the metrics (scikit-learn) and the extractors' corpus runner load only when a command runs."""
    script = ("import json, sys\nfrom msakit.cli import build_parser\nbuild_parser()\n"
              "print(json.dumps(sorted(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    heavy = {"msakit.api", "msakit.training.trainer", "msakit.tune", "msakit.reporting.plots",
             "msakit.evaluation.metrics", "msakit.extract.corpus", "msakit.extract.analyze",
             "sklearn", "optuna", "matplotlib"}
    assert loaded & heavy == set()
