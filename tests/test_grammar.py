"""One grammar for every sub-command (issue 21, must-haves 8 and 9).

- --seed wherever seeds are taken (train: --seed S ..., --seeds kept): test_seed_...
- --data / --run / --clips for every input, the positional forms kept as aliases:
  test_positional_forms_are_aliases_of_their_flags, test_alias_and_flag_together_...
- --out makes its missing folders (plot, report, config show; synth in test_cli):
  test_out_makes_missing_folders
- format from --out's extension, a contradicting --format refused: test_report_format_...
- --out - writes to standard output (report, predict, config show), refused elsewhere:
  test_out_dash_...
- help strings say a default once: test_no_help_repeats_its_default
- config show: test_config_show_..., its YAML loads as a --config and trains
- unknown --set keys: test_unknown_set_key_suggestions
"""

from __future__ import annotations

import argparse
import csv
import io
import json

import pytest
from conftest import run_cli


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An LMF run of one seed, one epoch on a tiny synthetic file with text features."""
    root = tmp_path_factory.mktemp("grammar")
    data = root / "d.npz"
    assert run_cli(["synth", "--like", "mosi", "--n", "8", "4", "4", "--text-features",
                    "--out", str(data)]) == 0
    run = root / "run"
    assert run_cli(["train", "--model", "lmf", "--dataset", "mosi", "--data", str(data),
                    "--epochs", "1", "--seed", "7", "--batch", "8", "--out", str(run),
                    "--quiet"]) == 0
    return data, run


# --------------------------------------------------------------------------- item 8
def test_seed_takes_one_or_more_and_seeds_is_its_alias():
    from msakit.cli import build_parser

    parser = build_parser()
    base = ["train", "--model", "lmf", "--dataset", "mosi", "--data", "x.npz"]
    assert parser.parse_args([*base, "--seed", "3", "4"]).seeds == [3, 4]
    assert parser.parse_args([*base, "--seeds", "5"]).seeds == [5]
    for command in (["synth", "--like", "mosi", "--n", "1", "1", "1", "--out", "x.npz"],
                    ["plot", "tsne", "--checkpoint", "c", "--data", "d", "--out", "o.png"]):
        assert parser.parse_args([*command, "--seed", "9"]).seed == 9
        assert parser.parse_args([*command, "--seeds", "8"]).seed == 8  # train's spelling


def test_positional_forms_are_aliases_of_their_flags(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    pkl = tmp_path / "d.pkl"
    from msakit.data.synthetic import write_synthetic

    write_synthetic(str(pkl), "mosi", (4, 2, 2), seed=0)
    for i, form in enumerate((["--data", str(pkl)], [str(pkl)])):
        assert run_cli(["convert", *form, "--out", str(tmp_path / f"c{i}.npz")]) == 0
    assert (tmp_path / "c0.npz").read_bytes() == (tmp_path / "c1.npz").read_bytes()
    tables = []
    for form in (["--run", str(run)], [str(run)]):
        capsys.readouterr()
        assert run_cli(["report", *form, "--format", "csv"]) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and str(run) in tables[0]
    for i, form in enumerate((["--run", str(run)], [str(run)])):
        assert run_cli(["plot", "curves", *form, "--out", str(tmp_path / f"p{i}.png")]) == 0
        assert (tmp_path / f"p{i}.png").stat().st_size > 0


def test_alias_and_flag_together_or_neither_is_one_error(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    capsys.readouterr()
    assert run_cli(["report", str(run), "--run", str(run)]) == 2
    assert "not both" in _error(capsys)
    assert run_cli(["convert", "--out", str(tmp_path / "x.npz")]) == 2
    assert "--data is required" in _error(capsys)
    assert run_cli(["plot", "curves", "--out", str(tmp_path / "x.png")]) == 2
    assert "--run is required" in _error(capsys)
    assert not list(tmp_path.iterdir())


def test_out_makes_missing_folders(tiny_run, tmp_path):
    data, run = tiny_run
    png = tmp_path / "plots" / "deep" / "curves.png"
    assert run_cli(["plot", "curves", "--run", str(run), "--out", str(png)]) == 0
    assert png.is_file()
    table = tmp_path / "tables" / "t.md"
    assert run_cli(["report", "--run", str(run), "--out", str(table)]) == 0
    assert table.read_text().startswith("| Run |")
    yml = tmp_path / "configs" / "lmf.yaml"
    assert run_cli(["config", "show", "--model", "lmf", "--dataset", "mosi", "--format", "yaml",
                    "--out", str(yml)]) == 0
    assert yml.is_file()


@pytest.mark.parametrize("suffix, check", [
    (".tex", lambda t: t.startswith("\\begin{tabular}")),
    (".md", lambda t: t.startswith("| Run |")),
    (".csv", lambda t: next(csv.reader(io.StringIO(t)))[:2] == ["run", "path"]),
    (".json", lambda t: json.loads(t)[0]["seeds"] == 1),
])
def test_report_format_follows_the_extension(suffix, check, tiny_run, tmp_path):
    _, run = tiny_run
    out = tmp_path / f"table{suffix}"
    assert run_cli(["report", "--run", str(run), "--out", str(out)]) == 0
    assert check(out.read_text()), out.read_text()


def test_a_format_that_contradicts_the_extension_is_one_error(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    capsys.readouterr()
    assert run_cli(["report", "--run", str(run), "--out", str(tmp_path / "t.tex"),
                    "--format", "markdown"]) == 2
    line = _error(capsys)
    assert "--format markdown" in line and "t.tex" in line
    assert run_cli(["predict", "--checkpoint", str(run / "seed-7"), "--data",
                    str(data), "--out", str(tmp_path / "p.tex")]) == 2
    assert "csv, json, not latex" in _error(capsys)
    assert not list(tmp_path.iterdir())


def test_out_dash_writes_to_standard_output(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    best = str(run / "seed-7")
    capsys.readouterr()
    assert run_cli(["predict", "--checkpoint", best, "--data", str(data), "--out", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 4 and set(rows[0]) == {"id", "prediction", "label"}
    assert run_cli(["predict", "--checkpoint", best, "--data", str(data), "--split", "valid",
                    "--out", "-", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 4 and {"id", "prediction", "label"} == set(records[0])
    file = tmp_path / "p.json"
    assert run_cli(["predict", "--checkpoint", best, "--data", str(data), "--split", "valid",
                    "--out", str(file)]) == 0
    assert json.loads(file.read_text()) == records
    capsys.readouterr()
    assert run_cli(["report", "--run", str(run), "--out", "-", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("run,path,")
    assert not (tmp_path / "-").exists() and not (tmp_path.parent / "-").exists()


def test_evaluate_out_dash_is_the_table_alone(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data", str(data), "--out", "-",
                    "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)  # one seed: its row
    assert row["seed"] == "7" and 0 <= row["MAE"]
    out = tmp_path / "new" / "e.csv"
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data", str(data), "--out",
                    str(out)]) == 0
    (saved,) = csv.DictReader(out.open())
    assert saved["seed"] == "7" and float(saved["MAE"]) == row["MAE"]


def test_out_dash_is_refused_where_only_files_are_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli(["synth", "--like", "mosi", "--n", "2", "2", "2", "--out", "-"]) == 2
    assert "standard output" in _error(capsys)
    assert not list(tmp_path.iterdir())


def test_predict_video_takes_several_clips():
    from msakit.cli import build_parser

    args = build_parser().parse_args(["predict", "--checkpoint", "c.pt", "--video", "a.mp4",
                                      "b.mp4", "--format", "json"])
    assert args.video == ["a.mp4", "b.mp4"] and args.format == "json"


def test_predict_video_text_belongs_to_one_clip(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for clip in clips:
        clip.write_bytes(b"x")
    capsys.readouterr()
    assert run_cli(["predict", "--checkpoint", str(run / "seed-7"), "--video",
                    *map(str, clips), "--text", "hello"]) == 2
    assert "--text belongs to one clip" in _error(capsys)


def _parsers(parser: argparse.ArgumentParser, name: str = ""):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for sub in subs:
        for child, p in sub.choices.items():
            yield from _parsers(p, f"{name} {child}".strip())


def test_no_help_repeats_its_default():
    from msakit.cli import build_parser

    for name, parser in _parsers(build_parser()):
        text = parser.format_help()
        for block in text.split("\n  -")[1:]:  # one option per block
            said = " ".join(block.split()).lower().count("(default")
            assert said <= 1, (name, block)


def test_every_command_takes_the_same_flags_for_the_same_things():
    """--data is an input file, --out an output, --seed a seed, wherever they appear."""
    from msakit.cli import build_parser

    for name, parser in _parsers(build_parser()):
        flags = {f: a for a in parser._actions for f in a.option_strings}
        if "--data" in flags:
            assert flags["--data"].role.direction == "input", name
        # --seed and --seeds: one flag wherever a seed is taken (docs/guide/cli.md's table)
        assert ("--seed" in flags) == ("--seeds" in flags), name
        if "--seed" in flags:
            assert flags["--seeds"] is flags["--seed"], name


# --------------------------------------------------------------------------- item 9
def test_config_show_lists_every_setting(capsys):
    import dataclasses

    from msakit.models.registry import preset

    capsys.readouterr()
    assert run_cli(["config", "show", "--model", "lmf", "--dataset", "mosi"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["key", "type", "range", "default", "paper"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]
            if line and not line.startswith(" ") and not line.endswith(":")}
    from msakit.config import KEYED

    config = preset("lmf", "mosi", "paper")
    expected = {f.name for f in dataclasses.fields(config.model)} | {
        f"{k}.{g}" for k, keys in KEYED.items() for g in keys} | {
        f.name for f in dataclasses.fields(config)
        if f.name not in (*KEYED, "model", "dataset", "model_name", "seeds",
                          "preset", "data", "init_from", "dataset_spec")}
    assert set(rows) == expected
    # LMF's MOSI preset trains 200 epochs with Adam; the declared defaults are 50 and adamw
    assert rows["epochs"][1:] == ["int", ">=", "1", "50", "200"]
    assert rows["optimizer"][-3:] == ["adamw|adam", "adamw", "adam"]
    assert "rank of the factorised fusion tensor" in out


def test_config_show_yaml_is_a_config_that_trains(tiny_run, tmp_path, capsys):
    from msakit.models.registry import preset
    from msakit.rerun import load_run_config

    data, _ = tiny_run
    yml = tmp_path / "lmf.yaml"
    assert run_cli(["config", "show", "--model", "lmf", "--dataset", "mosi", "--format", "yaml",
                    "--out", str(yml)]) == 0
    text = yml.read_text()
    assert "# Samples per batch" in text and "default 64" in text
    loaded = load_run_config(yml)
    assert loaded.to_dict() == preset("lmf", "mosi", "paper").to_dict()
    run = tmp_path / "run"
    assert run_cli(["train", "--config", str(yml), "--data", str(data), "--epochs", "1",
                    "--seed", "1", "--batch", "8", "--out", str(run), "--quiet"]) == 0
    assert (run / "results.csv").is_file()


@pytest.mark.parametrize("model", ["clgsi", "self_mm", "tfn"])
def test_config_show_yaml_loads_for_other_models(model, tmp_path, capsys):
    from msakit.models.registry import preset
    from msakit.rerun import load_run_config

    capsys.readouterr()
    assert run_cli(["config", "show", "--model", model, "--dataset", "sims", "--format",
                    "yaml"]) == 0
    yml = tmp_path / "c.yaml"
    yml.write_text(capsys.readouterr().out)
    assert load_run_config(yml).to_dict() == preset(model, "sims", "paper").to_dict()


@pytest.mark.parametrize("key, offered", [
    ("learning_rate", ["lr.audio", "lr.other", "lr.text", "lr.vision"]),
    ("learning_rate_bert", ["lr.text"]),
    ("hidden_dims", ["audio_hidden", "text_hidden", "vision_hidden"]),
    ("batchsize", ["batch_size"]),
])
def test_unknown_set_key_suggestions(key, offered):
    from msakit import api
    from msakit.core.errors import MsakitError

    with pytest.raises(MsakitError) as info:
        api.build_config("lmf", "mosi", overrides=[f"{key}=1"])
    line = str(info.value)
    assert "did you mean" in line
    for name in offered:
        assert name in line, line


def test_unknown_set_key_list_offers_no_refused_key():
    from msakit import api
    from msakit.core.errors import MsakitError

    with pytest.raises(MsakitError) as info:
        api.build_config("lmf", "mosi", overrides=["zzzz=1"])
    listed = str(info.value).split("valid keys: ")[1].split(", ")
    assert "batch_size" in listed and "rank" in listed
    assert not set(listed) & {"dataset", "model_name", "seeds", "preset", "data", "init_from"}
    with pytest.raises(MsakitError, match="config show"):
        api.build_config("lmf", "mosi", overrides=["help"])


def test_quiet_prints_the_results_only_and_says_so(tiny_run):
    """--quiet (train, demo, pretrain-adapters: one help string) drops progress bars, epoch
    lines and start notes; what it printed, train.log records: the results; history.json keeps
    every epoch."""
    from msakit.cli import build_parser

    _, run = tiny_run
    log = (run / "train.log").read_text()
    assert "wrote" in log and "MAE" in log and " epoch " not in log
    assert [r["epoch"] for r in json.loads((run / "seed-7" / "history.json").read_text())] == [1]
    commands = build_parser()._subparsers._group_actions[0].choices
    helps = {name: next(a.help for a in commands[name]._actions if "--quiet" in a.option_strings)
             for name in ("train", "demo", "pretrain-adapters")}
    assert len(set(helps.values())) == 1 and "epoch lines" in helps["train"], helps
