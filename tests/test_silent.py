"""Nothing silently wrong (issue 19, must-haves 7 and 8): a result msakit prints or writes is
either right or refused with one ``error:`` line; a value that does not exist is ``null`` /
blank and named in a ``warning:`` line, never a made-up number.

Issue 19's cases -> the tests here:
- ``train --resume --data OTHER.npz`` rewrote results.csv with the other file's metrics:
  test_resume_on_other_data_is_refused (and ``--config`` of a run on other data:
  tests/test_rerun.py::test_a_config_on_other_data_is_refused); a run written before msakit
  recorded its data: test_resume_of_a_run_without_recorded_data_warns
- `merge` of 1 of 2 shards, of shards of two corpora with one CSV name:
  test_merge_takes_the_shards_of_one_corpus_only
- checkpoints with NaN weights (evaluate, predict, plots, --init-from) and predictions that
  are not finite: test_a_checkpoint_with_nan_weights_is_refused,
  test_predictions_that_overflow_are_refused, test_init_from_a_checkpoint_with_nan_weights_...
- a checkpoint's config of wrong types (a float batch_size broke evaluate's batching, a tensor
  reached RunConfig's checks): test_a_checkpoint_config_of_wrong_types_is_one_line
- deep nesting in, or a malformed, extractor record (file or checkpoint):
  test_a_malformed_extractor_record_is_one_line, test_a_checkpoint_with_a_malformed_extract...
- constant test labels printed ``"Corr": NaN`` (invalid JSON) with no warning; one sample:
  test_evaluate_prints_null_for_an_undefined_metric_and_warns; in a run's results.csv,
  history.json, the terminal table, report and plot curves:
  test_a_run_with_undefined_metrics_writes_blanks_and_nulls
- a history.json with nulls (exit 1 "unexpected TypeError"):
  test_plot_curves_reads_nulls_and_refuses_other_values
- ``--batch 1`` joined every one-sample batch to the previous one (an epoch was one step):
  test_batch_1_is_one_step_per_sample; the rule (MMSA keeps a short last batch; BatchNorm
  cannot train on one sample): test_a_short_last_batch_is_a_step_unless_the_model_cannot_...,
  test_batch_1_for_a_model_with_batchnorm_is_one_line
- ``bench --max-steps 0`` reported 0 samples/s: test_bench_of_no_step_is_refused
- the Python API coerced ``seeds="12"`` to [1, 2] and ``epochs=2.7`` to 2, and raised bare
  TypeErrors: test_the_api_checks_types_without_coercion,
  test_every_public_function_checks_its_arguments (and what it accepts:
  test_the_api_takes_what_its_annotations_say)
- exit 1 "unexpected ..." instead of one line: ``plot tsne --perplexity 0``, ``--max-samples
  -5`` (test_tsne_settings_are_checked_first), ``plot weights --gain inf``
  (test_plot_weights_refuses_a_gain_that_is_no_finite_number), a binary ``--log-steps`` on
  resume (test_a_binary_step_log_on_resume_is_one_line), deep nesting in ids
  (test_nested_ids_or_texts_are_one_line), in the extractor record and a malformed one (above),
  a history.json with nulls (above)
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import best_checkpoint, run_cli, write_short_synthetic

TRAIN = ["--model", "clgsi", "--dataset", "mosi", "--seeds", "1", "--epochs", "1",
         "--batch", "8", "--quiet"]


def _one_error_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.fixture(scope="module")
def other_npz(tmp_path_factory) -> Path:
    """A file shaped as small_mosi_npz, with other content."""
    from msakit.data.mmsa import convert_to_npz

    root = tmp_path_factory.mktemp("other")
    pkl = write_short_synthetic(root / "other.pkl", "mosi", (23, 8, 8),
                                {"audio": 40, "vision": 30}, seed=7)
    return convert_to_npz(pkl, root / "other.npz") and root / "other.npz"


@pytest.fixture(scope="module")
def run(tiny_bert, small_mosi_npz, tmp_path_factory) -> Path:
    """A finished one-epoch CLGSI run on small_mosi_npz."""
    out = tmp_path_factory.mktemp("silent") / "run"
    assert run_cli(["train", *TRAIN, "--data", str(small_mosi_npz), "--text-encoder",
                    str(tiny_bert), "--out", str(out)]) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# --------------------------------------------------------------------------- data identity
def test_a_run_records_the_content_of_its_data(run, small_mosi_npz):
    digest = hashlib.blake2b(small_mosi_npz.read_bytes(), digest_size=32).hexdigest()
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert recorded == {"file": str(small_mosi_npz), "bytes": small_mosi_npz.stat().st_size,
                        "blake2b": digest}
    assert best_checkpoint(run / "seed-1")["config"]["data"] == recorded


def test_resume_on_other_data_is_refused(run, other_npz, tiny_bert, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _files(copy)
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--resume", "--data", str(other_npz), "--text-encoder",
                    str(tiny_bert), "--out", str(copy)]) == 2
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]["file"]
    _one_error_line(capsys.readouterr().err, "--resume", recorded, str(other_npz))
    assert _files(copy) == before


def test_resume_on_the_same_content_under_another_name_goes_on(run, small_mosi_npz, tiny_bert,
                                                                tmp_path, capsys):
    copy, data = tmp_path / "run", tmp_path / "renamed.npz"
    shutil.copytree(run, copy)
    shutil.copy(small_mosi_npz, data)
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--resume", "--data", str(data), "--text-encoder",
                    str(tiny_bert), "--out", str(copy)]) == 0
    assert capsys.readouterr().err == ""
    assert (copy / "results.csv").read_text() == (run / "results.csv").read_text()


def test_resume_of_a_run_without_recorded_data_warns(run, small_mosi_npz, tiny_bert, tmp_path,
                                                     capsys):
    """A run written before msakit recorded its data resumes, with one warning line."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    del saved["data"]
    (copy / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--resume", "--data", str(small_mosi_npz),
                    "--text-encoder", str(tiny_bert), "--out", str(copy)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "not checked" in err[0], err
    assert yaml.safe_load((copy / "config.yaml").read_text())["data"]["file"] == str(
        small_mosi_npz)  # recorded from now on


# --------------------------------------------------------------------------- merge
def _part(path: Path, shard: str | None, *, source: str = "clips.csv", digest: str = "ab" * 32,
          splits: object = "column", k: int = 0) -> Path:
    """A file as ``msakit extract --shard`` writes it: a small corpus part (ids and CSV rows
    of its own, ``k``-th) with an extractor record."""
    import numpy as np

    from msakit.data.synthetic import make_synthetic
    from msakit.extract.corpus import write_features
    from msakit.extract.settings import ExtractorSettings, package_versions

    content = make_synthetic("mosi", 2, 1, 1, seed=k)
    for split, arrays in content.items():
        arrays["id"] = np.array([f"{k}-{split}-{i}" for i in range(len(arrays["id"]))])
    rows = {"train": [10 * k, 10 * k + 1], "valid": [10 * k + 2], "test": [10 * k + 3]}
    write_features(path, content, {
        "settings": ExtractorSettings().to_dict(30522), "versions": package_versions(),
        "source": source, "source_blake2b": digest, "splits": splits, "shard": shard,
        "rows": rows, "asr": [], "failures": 0})
    return path


@pytest.mark.parametrize("given, message", [
    ([("1/2", {})], "shard 2/2 of clips.csv is missing"),
    ([("1/3", {}), ("3/3", {})], "shard 2/3 of clips.csv is missing"),
    ([("1/2", {}), ("2/2", {"digest": "cd" * 32})], "contents differ"),
    ([("1/2", {}), ("2/2", {"splits": {"ratio": [0.8, 0.1, 0.1], "seed": 1}})], "splits"),
    ([("1/2", {}), ("2/3", {})], "different --shard counts"),
    ([(None, {}), ("1/1", {})], "a whole corpus"),
])
def test_merge_takes_the_shards_of_one_corpus_only(tmp_path, capsys, given, message):
    parts = [str(_part(tmp_path / f"p{k}.npz", shard, k=k, **edit))
             for k, (shard, edit) in enumerate(given)]
    capsys.readouterr()
    assert run_cli(["merge", *parts, "--out", str(tmp_path / "m.npz")]) == 2
    _one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "m.npz").exists()


def test_merge_of_every_shard_of_one_corpus_is_the_whole(tmp_path, capsys):
    parts = [str(_part(tmp_path / f"p{k}.npz", f"{k + 1}/3", k=k)) for k in range(3)]
    assert run_cli(["merge", *parts[::-1], "--out", str(tmp_path / "m.npz")]) == 0
    from msakit.extract.settings import read_metadata

    record = read_metadata(tmp_path / "m.npz")
    assert record["shard"] is None and record["source_blake2b"] == "ab" * 32
    assert record["rows"]["train"] == [0, 1, 10, 11, 20, 21]


def test_merge_of_shards_without_a_csv_hash_warns(tmp_path, capsys):
    """Parts extracted before msakit recorded the CSV's content: merged, with one warning."""
    import numpy as np

    from msakit.extract.settings import METADATA_KEY, encode_metadata, read_metadata

    parts = []
    for k in range(2):
        path = _part(tmp_path / f"p{k}.npz", f"{k + 1}/2", k=k)
        record = read_metadata(path)
        del record["source_blake2b"], record["splits"]
        with np.load(path) as z:
            arrays = {key: z[key] for key in z.files}
        np.savez(path, **{**arrays, METADATA_KEY: encode_metadata(record)})
        parts.append(str(path))
    capsys.readouterr()
    assert run_cli(["merge", *parts, "--out", str(tmp_path / "m.npz")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "one corpus" in err[0]


# --------------------------------------------------------------------------- extractor record
@pytest.mark.parametrize("record, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"settings": {"format": "msakit-extractor-1"}}', "settings.audio"),
    ('{"settings": {"format": "msakit-extractor-1", "audio": 3}}', "settings.audio"),
    ("[1, 2]", "no 'settings' mapping"),
])
def test_a_malformed_extractor_record_is_one_line(run, small_mosi_npz, tiny_bert, tmp_path,
                                                  capsys, record, message):
    """evaluate and train read a feature file's extractor record; one that is not msakit's
    (deep nesting, missing or mistyped entries) is one line, never copied into a checkpoint."""
    import numpy as np

    from msakit.extract.settings import METADATA_KEY

    with np.load(small_mosi_npz) as z:
        arrays = {key: z[key] for key in z.files}
    data = tmp_path / "record.npz"
    np.savez(data, **arrays, **{METADATA_KEY: np.array(record)})
    for argv in (["evaluate", "--checkpoint", str(run), "--data", str(data)],
                 ["train", *TRAIN, "--data", str(data), "--text-encoder", str(tiny_bert),
                  "--out", str(tmp_path / "r")]):
        capsys.readouterr()
        assert run_cli(argv) == 2
        _one_error_line(capsys.readouterr().err, str(data), message)
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_with_a_malformed_extractor_record_is_one_line(run, small_mosi_npz,
                                                                    tmp_path, capsys):
    state = best_checkpoint(run / "seed-1")
    torch.save({**state, "extractor": {"settings": [1]}}, tmp_path / "x.pt")
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--data",
                    str(small_mosi_npz)]) == 2
    _one_error_line(capsys.readouterr().err, "x.pt: 'extractor'")


def _nested(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


@pytest.mark.parametrize("edit, key", [
    ({"batch_size": 2.5}, "batch_size: expected int, got float 2.5"),
    ({"epochs": torch.zeros(0)}, "epochs: expected int, got Tensor"),
    ({"early_stop": True}, "early_stop: expected int, got bool"),
    ({"warmup": torch.tensor(0.1)}, "warmup: expected float, got Tensor"),
    ({"lr": {"text": torch.tensor(1e-3)}}, "lr.text: expected float, got Tensor"),
    ({"seeds": [1.0]}, "seeds[0]: expected int, got float"),
    ({"amp": 0}, "amp: expected str, got int"),
    ({"data": {"file": "x.npz", "bytes": torch.zeros(2)}}, "data.bytes: expected plain data"),
    ({"dataset_spec": {"label_range": _nested(200)}}, "dataset_spec: nested more than"),
], ids=["float-batch", "tensor-epochs", "bool-int", "tensor-float", "tensor-lr", "float-seed",
        "int-string", "tensor-in-data", "nested-spec"])
def test_a_checkpoint_config_of_wrong_types_is_one_line(run, small_mosi_npz, tmp_path, capsys,
                                                        edit, key):
    """A checkpoint's config holds plain typed values (ints, floats, strings; no tensors),
    checked when it is read: a float batch_size once passed load_checkpoint and broke
    evaluate's batching, a tensor reached RunConfig's checks (RuntimeError)."""
    state = best_checkpoint(run / "seed-1")
    torch.save({**state, "config": {**state["config"], **edit}}, tmp_path / "x.pt")
    for argv in (["evaluate"], ["predict", "--out", str(tmp_path / "p.csv")]):
        capsys.readouterr()
        assert run_cli([*argv, "--checkpoint", str(tmp_path / "x.pt"), "--data",
                        str(small_mosi_npz)]) == 2
        _one_error_line(capsys.readouterr().err, "x.pt: its configuration", key)
    assert not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------------- finite numbers
@pytest.mark.parametrize("command", ["evaluate", "predict", "scatter"])
def test_a_checkpoint_with_nan_weights_is_refused(run, small_mosi_npz, tmp_path, capsys,
                                                  command):
    """NaN weights once evaluated to MAE NaN beside Has0_acc_2 0.25."""
    state = best_checkpoint(run / "seed-1")
    name = [k for k, v in state["model"].items() if v.is_floating_point()][7]
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    argv = {"evaluate": ["evaluate"], "predict": ["predict", "--out", str(tmp_path / "p.csv")],
            "scatter": ["plot", "scatter", "--out", str(tmp_path / "p.png")]}[command]
    capsys.readouterr()
    assert run_cli([*argv, "--checkpoint", str(tmp_path / "nan.pt"), "--data",
                    str(small_mosi_npz)]) == 2
    _one_error_line(capsys.readouterr().err, "nan.pt", name)
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "p.png").exists()


def test_predictions_that_overflow_are_refused(run, small_mosi_npz, tmp_path, capsys):
    """Finite weights whose computation overflows: the prediction is checked too."""
    state = best_checkpoint(run / "seed-1")
    last = [k for k in state["model"] if k.endswith(".weight")][-1]
    huge = torch.full_like(state["model"][last], 3e38)
    huge.view(-1)[::2] = -3e38
    state["model"][last] = huge
    torch.save(state, tmp_path / "huge.pt")
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(tmp_path / "huge.pt"), "--data",
                    str(small_mosi_npz)]) == 2
    _one_error_line(capsys.readouterr().err, "huge.pt", "predicts nan for sample 0")


def test_init_from_a_checkpoint_with_nan_weights_is_refused(run, small_mosi_npz, tiny_bert,
                                                            tmp_path, capsys):
    state = best_checkpoint(run / "seed-1")
    name = [k for k in state["model"] if k.startswith("head.")][0]
    state["model"][name] = torch.full_like(state["model"][name], float("inf"))
    torch.save(state, tmp_path / "inf.pt")
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--data", str(small_mosi_npz), "--text-encoder",
                    str(tiny_bert), "--init-from", str(tmp_path / "inf.pt"),
                    "--out", str(tmp_path / "r")]) == 2
    _one_error_line(capsys.readouterr().err, "inf.pt", name)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- undefined metrics
def _strict_json(text: str):
    """JSON as the standard defines it: NaN and Infinity are not JSON."""
    import json

    def refuse(token: str):
        raise AssertionError(f"invalid JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def constant_npz(small_mosi_npz, tmp_path_factory) -> Path:
    """small_mosi_npz with every valid and test label 1.0 (Corr undefined there)."""
    from msakit.data.safe_format import read_npz, save_npz

    with open(small_mosi_npz, "rb") as f:
        content = read_npz(f, str(small_mosi_npz), mmap=False)
    for split in ("valid", "test"):
        content[split]["regression_labels"][:] = 1.0
    return save_npz(content, tmp_path_factory.mktemp("constant") / "constant.npz")


@pytest.fixture(scope="module")
def one_sample_npz(small_mosi_npz, tmp_path_factory) -> Path:
    from msakit.data.safe_format import read_npz, save_npz

    with open(small_mosi_npz, "rb") as f:
        content = read_npz(f, str(small_mosi_npz), mmap=False)
    content["test"] = {k: v[:1] for k, v in content["test"].items()}
    return save_npz(content, tmp_path_factory.mktemp("one") / "one.npz")


@pytest.mark.parametrize("data", ["constant_npz", "one_sample_npz"])
def test_evaluate_prints_null_for_an_undefined_metric_and_warns(run, request, capsys, data):
    path = request.getfixturevalue(data)
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data", str(path)]) == 0
    out, err = capsys.readouterr()
    metrics = _strict_json(out)
    assert metrics["Corr"] is None and isinstance(metrics["MAE"], float)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "Corr undefined" in lines[0]
    assert str(path) in lines[0]


def test_a_run_with_undefined_metrics_writes_blanks_and_nulls(constant_npz, tiny_bert, tmp_path,
                                                              capsys):
    import csv
    import json

    out = tmp_path / "run"
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--data", str(constant_npz), "--text-encoder",
                    str(tiny_bert), "--out", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert "nan" not in stdout.lower()
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "Corr undefined" in warnings[0] and "seed 1" in warnings[0]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["Corr"] for r in rows] == ["", "", ""]  # seed 1, mean, std
    assert all(r["MAE"] for r in rows[:2])
    history = _strict_json((out / "seed-1" / "history.json").read_text())
    assert history[0]["valid_Corr"] is None
    assert json.loads((out / "seed-1" / "history.json").read_text()) == history
    # report: the blank is undefined (n/a, blank in CSV, a warning), not a broken file
    capsys.readouterr()
    assert run_cli(["report", str(out)]) == 0
    table, err = capsys.readouterr()
    assert "n/a" in table and "nan" not in table.lower()
    assert err.startswith("warning: ") and "Corr" in err
    assert run_cli(["report", str(out), "--format", "csv"]) == 0
    row = list(csv.DictReader(capsys.readouterr().out.splitlines()))[0]
    assert row["Corr_mean"] == "" and row["MAE_mean"] != ""
    assert run_cli(["plot", "curves", str(out), "--out", str(tmp_path / "c.png")]) == 0


@pytest.mark.parametrize("edit, message", [
    (lambda h: h[0].update(valid_MAE=None), None),
    (lambda h: h[0].update(valid_MAE="low"), "entry 1: 'valid_MAE' is 'low', not a number"),
    (lambda h: h.append([1, 2]), "entry 2 is a list, not an epoch's record"),
    (lambda h: h[0].update(epoch=None), "entry 1: 'epoch' is None, not an epoch number"),
])
def test_plot_curves_reads_nulls_and_refuses_other_values(run, tmp_path, capsys, edit, message):
    import json

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "seed-1" / "history.json"
    history = json.loads(path.read_text())
    edit(history)
    path.write_text(json.dumps(history))
    capsys.readouterr()
    code = run_cli(["plot", "curves", str(copy), "--out", str(tmp_path / "c.png")])
    if message is None:
        assert code == 0 and (tmp_path / "c.png").is_file()
    else:
        assert code == 2
        _one_error_line(capsys.readouterr().err, str(path), message)


# --------------------------------------------------------------------------- batches
def test_a_short_last_batch_is_a_step_unless_the_model_cannot_train_on_it():
    """MMSA's DataLoader keeps a last batch of one sample; BatchNorm cannot train on it (MMSA
    raises), so for a model with BatchNorm it joins the batch before."""
    import numpy as np
    from torch import nn

    from msakit.data.batching import join_small_batches
    from msakit.training.trainer import smallest_batch

    plan = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 9)]
    assert smallest_batch(nn.Linear(3, 1)) == 1
    assert smallest_batch(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))) == 2
    assert smallest_batch(nn.Linear(3, 1), world_size=3) == 3
    assert [len(b) for b in join_small_batches(plan, 1)] == [4, 4, 1]
    assert [len(b) for b in join_small_batches(plan, 2)] == [4, 5]
    ones = [np.array([i]) for i in range(5)]
    assert len(join_small_batches(ones, 1)) == 5


@pytest.fixture(scope="module")
def text_features_npz(tmp_path_factory) -> Path:
    """5 / 3 / 3 samples with the precomputed text features MulT, TFN and LMF read."""
    from msakit.data.mmsa import convert_to_npz
    from msakit.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("text_features")
    pkl = write_synthetic(root / "t.pkl", "mosi", (5, 3, 3), text_features=True,
                          frames={"audio": 20, "vision": 15})
    convert_to_npz(pkl, root / "t.npz")
    return root / "t.npz"


def test_batch_1_is_one_step_per_sample(text_features_npz, tmp_path):
    """--batch 1 once joined every one-sample batch to the one before: one step an epoch."""
    import json

    log = tmp_path / "steps.jsonl"
    assert run_cli(["train", "--model", "mult", "--dataset", "mosi", "--data",
                    str(text_features_npz), "--seeds", "1", "--epochs", "2", "--batch", "1",
                    "--out", str(tmp_path / "run"), "--quiet", "--log-steps", str(log)]) == 0
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 11))  # 5 samples x 2 epochs


@pytest.mark.parametrize("model", ["clgsi", "tfn"])
def test_batch_1_for_a_model_with_batchnorm_is_one_line(model, text_features_npz,
                                                        small_mosi_npz, tiny_bert, tmp_path,
                                                        capsys):
    data = ["--data", str(small_mosi_npz), "--text-encoder", str(tiny_bert)] if (
        model == "clgsi") else ["--data", str(text_features_npz)]
    capsys.readouterr()
    assert run_cli(["train", "--model", model, "--dataset", "mosi", *data, "--seeds", "1",
                    "--epochs", "1", "--batch", "1", "--out", str(tmp_path / "run"),
                    "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, "BatchNorm", "--batch 2")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- bench
@pytest.mark.parametrize("flag, value", [("--max-steps", "0"), ("--max-steps", "-5"),
                                         ("--warmup-steps", "-1")])
def test_bench_of_no_step_is_refused(small_mosi_npz, tiny_bert, capsys, flag, value):
    """bench --max-steps 0 once reported 0 samples/s."""
    capsys.readouterr()
    assert run_cli(["bench", "--model", "clgsi", "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), flag, value]) == 2
    out, err = capsys.readouterr()
    _one_error_line(err, flag, value)
    assert "samples" not in out


# --------------------------------------------------------------------------- the Python API
@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": "12"}, "seeds must be list[int] | None, got '12'"),
    ({"seeds": [1.5]}, "seeds must be list[int] | None"),
    ({"epochs": 2.7}, "epochs must be int | None, got 2.7"),
    ({"epochs": "3"}, "epochs must be int | None, got '3'"),
    ({"batch": True}, "batch must be int | None, got True"),
    ({"resume": "yes"}, "resume must be bool"),
    ({"out": 5}, "out must be str | os.PathLike"),
    ({"bogus": 1}, "unexpected keyword argument 'bogus'"),
])
def test_the_api_checks_types_without_coercion(small_mosi_npz, tiny_bert, tmp_path, kwargs,
                                               message):
    """train once read seeds="12" as seeds [1, 2] and epochs=2.7 as 2 epochs."""
    import msakit
    from msakit.core.errors import MsakitError

    with pytest.raises(MsakitError) as info:
        msakit.train("clgsi", "mosi", small_mosi_npz, text_encoder=str(tiny_bert),
                     **{"out": tmp_path / "run", **kwargs})
    assert str(info.value).startswith("msakit.train: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("call, message", [
    (lambda m, run, data: m.evaluate(run, data, split=3), "msakit.evaluate: split must be str"),
    (lambda m, run, data: m.evaluate(7, data), "msakit.evaluate: checkpoint must be"),
    (lambda m, run, data: m.predict(run, data, out=1.5), "msakit.predict: out must be"),
    (lambda m, run, data: m.load_checkpoint(None), "msakit.load_checkpoint: path must be"),
    (lambda m, run, data: m.synth("mosi", (3, 3, "3"), "x.npz"), "msakit.synth: n must be"),
    (lambda m, run, data: m.build_config("clgsi", "mosi", seeds=[True]),
     "msakit.build_config: seeds must be"),
    (lambda m, run, data: m.train("clgsi"), "msakit.train: missing a required argument: 'dataset'"),
])
def test_every_public_function_checks_its_arguments(run, small_mosi_npz, call, message):
    from msakit import api
    from msakit.core.errors import MsakitError

    with pytest.raises(MsakitError) as info:
        call(api, run, small_mosi_npz)
    assert str(info.value).startswith(message), str(info.value)


def test_the_api_takes_what_its_annotations_say(run, small_mosi_npz, tmp_path):
    """Paths as str or Path, ints as float settings, lists for tuples of counts."""
    import msakit
    from msakit.api import build_config
    from msakit.core.errors import MsakitError

    config = build_config("clgsi", "mosi", seeds=[3, 4], epochs=2, batch=8)
    assert config.seeds == [3, 4] and config.epochs == 2 and config.batch_size == 8
    with pytest.raises(MsakitError, match="no seed given"):  # not the preset's seeds
        build_config("clgsi", "mosi", seeds=[])
    assert msakit.synth("mosi", [2, 2, 2], tmp_path / "s.npz").is_file()
    metrics = msakit.evaluate(str(run), small_mosi_npz)
    assert metrics == msakit.evaluate(run, str(small_mosi_npz), "test")


# --------------------------------------------------------------------------- one line, exit 2
@pytest.mark.parametrize("argv, message", [
    (["plot", "tsne", "--perplexity", "0"], "--perplexity must be a number above 0, got 0.0"),
    (["plot", "tsne", "--perplexity", "nan"], "--perplexity must be a number above 0, got nan"),
    (["plot", "tsne", "--max-samples", "-5"], "--max-samples must be at least 3"),
])
def test_tsne_settings_are_checked_first(run, small_mosi_npz, tmp_path, capsys, argv,
                                         message):
    capsys.readouterr()
    assert run_cli([*argv, "--checkpoint", str(run), "--data", str(small_mosi_npz), "--out",
                    str(tmp_path / "t.png")]) == 2
    _one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "t.png").exists()


@pytest.mark.parametrize("gain", ["inf", "nan", "-1"])
def test_plot_weights_refuses_a_gain_that_is_no_finite_number(tmp_path, capsys, gain):
    capsys.readouterr()
    assert run_cli(["plot", "weights", "--gain", gain, "--out", str(tmp_path / "w.png")]) == 2
    _one_error_line(capsys.readouterr().err, "--gain must be a finite number >= 0")
    assert not (tmp_path / "w.png").exists()


def test_a_binary_step_log_on_resume_is_one_line(run, tiny_bert, small_mosi_npz, tmp_path,
                                                 capsys):
    """The run's own step log (the one it recorded) turned binary: --resume, which keeps its
    other seeds' lines, stops with one line instead of 'unexpected UnicodeDecodeError'; the
    file is left as it was. (Any other existing file is refused before: msakit.core.safety.)"""
    copy, log = tmp_path / "run", tmp_path / "steps.log"
    shutil.copytree(run, copy)
    # the seed had not finished (a finished one is not trained again: its log is not read)
    (copy / "seed-1" / "history.json").unlink()
    log.write_bytes(bytes(range(256)) * 4)
    (copy / ".msakit-step-log").write_text(f"{log.resolve()}\n")
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--resume", "--data", str(small_mosi_npz),
                    "--text-encoder", str(tiny_bert), "--out", str(copy), "--log-steps",
                    str(log)]) == 2
    _one_error_line(capsys.readouterr().err, str(log), "not UTF-8")
    assert log.read_bytes() == bytes(range(256)) * 4


@pytest.mark.parametrize("depth, expected", [(3, "one is a list"), (5000, "nested deeper than")])
@pytest.mark.parametrize("key", ["id", "raw_text"])
def test_nested_ids_or_texts_are_one_line(run, small_mosi_npz, tmp_path, capsys, key, depth,
                                          expected):
    """An id or text that is a nested list, not a string: exit 1 "unexpected RecursionError"
    once, or the list's repr taken as the id. A shallow list is refused by the feature-file
    check (naming the key), a deep one by the pickle reader's depth cap."""
    import pickle
    import sys

    from msakit.data.safe_format import read_npz

    with open(small_mosi_npz, "rb") as f:
        content = read_npz(f, str(small_mosi_npz), mmap=False)
    content["test"]["raw_text"] = [f"text {i}" for i in range(len(content["test"]["id"]))]
    nested: object = "x"
    for _ in range(depth):
        nested = [nested]
    content["test"][key] = [nested] * len(content["test"]["id"])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # only to write the file
    try:
        (tmp_path / "nested.pkl").write_bytes(pickle.dumps(content, protocol=4))
    finally:
        sys.setrecursionlimit(limit)
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data",
                    str(tmp_path / "nested.pkl")]) == 2
    name = f"key '{key}'" if depth < 10 else "nested.pkl"
    _one_error_line(capsys.readouterr().err, name, expected)
