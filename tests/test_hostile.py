"""Hostile and unlucky input, every command: one ``error:`` line, the right exit status, no
traceback, nothing new written, inputs byte-identical, and no pickle payload ever runs.

The table ``CASES`` is the red-team list of issue 11 (code from data files, lost data, silently
wrong results, tracebacks). Each case runs ``msakit ARGV`` in this process against files built
once for the module; a few cases that need a real process (Ctrl-C, a file-size limit) and the
behaviours that are not errors (divergence, locks, step logs, the newcomer's CLI) follow.

Issue 11's list ("Why") -> the tests here (CASES ids unless a test function is named):
- pickle renamed .npz through evaluate, predict, train: {evaluate,predict,train}-pickle-named-npz
- convert evil.pkl; protocol-0 pickle: convert-pickle, convert-protocol-0
- predict --out = --data: predict-out-is-data-npz / -pkl / -is-symlink-to-data
- --log-steps = data: log-steps-is-data
- existing run folder without --resume: train-into-existing-run, train-config-into-its-own-run
- --log-steps with two seeds: test_log_steps_keeps_every_seed
- two trainings into one --out: train-locked-run, test_overwrite_replaces_and_a_lock_of_a_killed_...
- ConKI --dataset sims on a MOSI file: conki-sims-on-mosi-file (sims-on-mosi-file for CLGSI)
- label 40: label-40, evaluate-label-40
- lr=-1, weight_decay=-1: set-lr-negative, set-weight-decay-negative, tune-set-lr-negative
- --set dataset=sims: set-dataset, conki-set-dataset
- NaN validation loss: test_a_nan_validation_loss_ends_cleanly (NaN training loss:
  test_diverged_run_ends_cleanly_..., test_a_huge_learning_rate_diverges_with_one_line)
- truncated / foreign last.pt on --resume: resume-truncated-last, resume-foreign-last,
  resume-self-mm-no-training-state / -foreign-training-state / -training-state-shapes
- well-formed checkpoints / adapter files of a wrong structure: evaluate-checkpoint-*,
  predict-checkpoint-encoder-config, adapters-*, init-from-*, import-weights-*
- disk full: test_disk_full_during_training_leaves_no_temp_file,
  test_file_size_limit_keeps_the_previous_file, test_oserror_is_one_line
- --seeds -5, a 20-digit seed: seed-negative, seed-20-digits
- --set seeds=abc, dropout=abc, common_dim=-4: set-seeds, set-dropout-text, set-width-negative
- a train split of one sample: train-split-of-one
- output path a directory / an unwritable sub-folder: predict-out-is-folder,
  report-out-is-folder, synth-out-is-folder, predict-out-unwritable
- one grammar (issue 21): synth-out-dash, report-format-contradicts-out, convert-file-and-data,
  config-show-custom-without-range
- corrupt config.yaml / results.csv / history.json read by --resume, report, plot:
  resume-corrupt-config, resume-config-list, report-corrupt-results, report-corrupt-config,
  plot-corrupt-history, train-config-corrupt-yaml
- tune on a bad data file: tune-garbage-data, tune-pickle, tune-sims-on-mosi
- Ctrl-C during start-up (and while working) for train, tune, extract: test_ctrl_c_is_one_line;
  a Ctrl-C Python swallows: test_a_ctrl_c_python_cannot_raise_is_delivered_again,
  test_a_failure_after_ctrl_c_is_an_interruption_not_a_bug
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    best_checkpoint,
    default_signals,
    held_locks,
    run_cli,
    write_short_synthetic,
)

from msakit.models.registry import BUILTIN

SRC = Path(__file__).resolve().parents[1] / "src"


# --------------------------------------------------------------------------- payloads
class _Payload:
    """Unpickling this calls ``builtins.open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


class _ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_pickle(path: Path, obj, protocol: int) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


# --------------------------------------------------------------------------- the files
@dataclass
class World:
    root: Path
    marker: Path
    bert: Path
    bert12: Path
    data: Path  # MOSI-shaped npz
    pkl: Path  # the same as an MMSA pickle
    sims: Path
    label40: Path
    one_train: Path
    garbage: Path
    empty: Path
    run: Path  # a trained CLGSI run, seed 1
    ckpt: Path
    evil: dict[str, Path]
    bad_ckpt: dict[str, Path]
    bad_runs: dict[str, Path]
    bad_adapters: dict[str, Path]
    clips: Path  # a clips CSV for extract
    extras: dict[str, Path]  # files to predict on without labels; config.yaml files
    specs: dict[str, Path]  # --dataset-spec files, bad in one way each
    unaligned: dict[str, Path]  # feature files with missing lengths


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert, tiny_bert_12) -> World:
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "PAYLOAD_RAN"
    pkl = write_short_synthetic(root / "mosi.pkl", "mosi", (23, 8, 8),
                                {"audio": 40, "vision": 30})
    from msakit.data.mmsa import convert_to_npz

    data = root / "mosi.npz"
    convert_to_npz(pkl, data)
    sims = write_short_synthetic(root / "sims.pkl", "sims", (12, 6, 6), {"audio": 40, "vision": 30})
    with open(pkl, "rb") as f:
        raw = pickle.load(f)
    raw40 = pickle.loads(pickle.dumps(raw))
    raw40["train"]["regression_labels"][3] = 40.0
    label40 = _write_pickle(root / "label40.pkl", raw40, 4)
    one = pickle.loads(pickle.dumps(raw))
    for key, value in one["train"].items():
        one["train"][key] = value[:1]
    one_train = _write_pickle(root / "one_train.pkl", one, 4)
    garbage = root / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle at all" * 10)
    empty = root / "empty.npz"
    empty.write_bytes(b"")

    evil = {
        "npz_p4": _write_pickle(root / "evil.npz", _Payload(marker), 4),
        "pkl_p0": _write_pickle(root / "evil0.pkl", _Payload(marker), 0),
        "pkl_p2": _write_pickle(root / "evil2.pkl", _Payload(marker), 2),
        "csv_p5": _write_pickle(root / "evil5.csv", _ShellPayload(marker), 5),
        "pt_p2": _write_pickle(root / "evil.pt", {"model": _Payload(marker)}, 2),
    }
    nested = pickle.loads(pickle.dumps(raw))
    nested["test"]["id"] = [_Payload(marker)] * len(nested["test"]["id"])
    evil["nested"] = _write_pickle(root / "nested.pkl", nested, 4)

    run = root / "run"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
                    "--text-encoder", str(tiny_bert), "--seeds", "1", "--epochs", "1",
                    "--batch", "8", "--out", str(run), "--quiet", "--keep-last"]) == 0
    state = best_checkpoint(run / "seed-1")
    ckpt = root / "best.pt"  # the seed's weights in the earlier format, which is still read
    torch.save(state, ckpt)

    def save(name: str, obj) -> Path:
        torch.save(obj, root / name)
        return root / name

    wrong_shape = dict(state, model={k: torch.zeros(3) for k in state["model"]})
    bad_ckpt = {
        "truncated": root / "truncated.pt",
        "list": save("list.pt", [1, 2, 3]),
        "model_list": save("model_list.pt", dict(state, model=[1, 2])),
        "config_types": save("config_types.pt",
                             dict(state, config=dict(state["config"], model=[1], lr="fast"))),
        "dims": save("dims.pt", dict(state, dims={"audio": -1, "vision": 20, "text": "x"})),
        "shapes": save("shapes.pt", wrong_shape),
        "no_encoder": save("no_encoder.pt", dict(state, text_encoder_config=7)),
    }
    bad_ckpt["truncated"].write_bytes(ckpt.read_bytes()[:5000])

    bad_runs = {}
    for name, edit in {
        "yaml": lambda d: (d / "config.yaml").write_text("model: [unclosed\n  : :"),
        "yaml_list": lambda d: (d / "config.yaml").write_text("- 1\n- 2\n"),
        "csv": lambda d: (d / "results.csv").write_text("\x00\x01garbage,,\n1,2\nx"),
        "history": lambda d: (d / "seed-1" / "history.json").write_text("{not json"),
        "last_truncated": lambda d: (d / "seed-1" / "last.pt").write_bytes(
            (d / "seed-1" / "last.pt").read_bytes()[:4000]),
        "last_foreign": lambda d: shutil.copy(ckpt, d / "seed-1" / "last.pt"),
    }.items():
        folder = root / f"run_{name}"
        shutil.copytree(run, folder)
        edit(folder)
        bad_runs[name] = folder
    two = root / "run_two_seeds"
    shutil.copytree(run, two)
    shutil.copytree(two / "seed-1", two / "seed-2")
    bad_runs["two_seeds"] = two
    truncated = root / "run_two_seeds_truncated"
    shutil.copytree(two, truncated)
    weights = truncated / "seed-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    bad_runs["two_seeds_truncated"] = truncated
    (root / "empty_dir").mkdir()
    bad_runs["empty_dir"] = root / "empty_dir"

    bad_adapters = {
        "list": save("adapters_list.pt", [1, 2]),
        "no_format": save("adapters_noformat.pt", {"model": {}}),
        "model_list": save("adapters_model_list.pt", {
            "format": "msakit-adapters-1", "model": [1], "encoders": {}, "adapter_signature": {},
            "text_encoder_config": {}, "text_encoder_fingerprint": "x"}),
        "signature_str": save("adapters_sig.pt", {
            "format": "msakit-adapters-1", "model": {}, "encoders": {}, "adapter_signature": "x",
            "text_encoder_config": {}, "text_encoder_fingerprint": "x"}),
    }
    clips = root / "clips.csv"
    clips.write_text("id,video,label\nc1,no_such_video.mp4,1.0\n")
    (root / "link.npz").symlink_to(data)
    (root / "a_folder").mkdir()
    specs = {}
    for name, text in {
        "no_range": "language: en\n", "no_zero": "label_range: [1, 5]\n",
        "family": "label_range: [-3, 3]\nmetric_family: iemocap\n",
        "unknown_key": "label_range: [-3, 3]\nlabels: 7\n", "list": "- 1\n",
        "yaml": "label_range: [unclosed\n", "language": "label_range: [-3, 3]\nlanguage: fr\n",
    }.items():
        specs[name] = root / f"spec_{name}.yaml"
        specs[name].write_text(text)
    unaligned = {}
    half = pickle.loads(pickle.dumps(raw))
    del half["test"]["audio_lengths"]
    unaligned["half"] = _write_pickle(root / "half_aligned.pkl", half, 4)
    none = pickle.loads(pickle.dumps(raw))
    for split in none.values():
        del split["audio_lengths"], split["vision_lengths"]
    unaligned["none"] = _write_pickle(root / "no_lengths.pkl", none, 4)
    extras = {**_extras(root, raw), **_baseline_files(root, tiny_bert, marker)}
    bad_ckpt["msakit_tfn_pth"] = save("msakit_tfn.pth",
                                      best_checkpoint(extras["tfn_run"] / "seed-1")["model"])
    bad_ckpt["not_tensors"] = save("not_tensors.pth", {"weight": "heavy"})
    bad_runs.update(_self_mm_runs(root, data, tiny_bert))
    return World(root=root, marker=marker, bert=tiny_bert, bert12=tiny_bert_12, data=data,
                 pkl=pkl, sims=sims, label40=label40, one_train=one_train, garbage=garbage,
                 empty=empty, run=run, ckpt=ckpt, evil=evil, bad_ckpt=bad_ckpt,
                 bad_runs=bad_runs, bad_adapters=bad_adapters, clips=clips,
                 extras=extras, specs=specs, unaligned=unaligned)


def _baseline_files(root: Path, bert: Path, marker: Path) -> dict[str, Path]:
    """Files with the precomputed ``text`` features TFN/LMF/MulT read (MOSI widths; SIMS
    widths; text features 100 wide), a trained TFN run, and config.yaml files bad in one way
    each (a YAML tag that would run a shell command; values out of range)."""
    from msakit.data.mmsa import convert_to_npz
    from msakit.data.safe_format import save_npz
    from msakit.data.synthetic import make_synthetic, write_synthetic

    files = {}
    for name, like in (("text_data", "mosi"), ("sims_text", "sims")):
        pkl = write_synthetic(root / f"{name}.pkl", like, (23, 8, 8), text_features=True,
                              frames={"audio": 40, "vision": 30})
        files[name] = root / f"{name}.npz"
        convert_to_npz(pkl, files[name])
    narrow = make_synthetic("mosi", 3, 3, 3, text_features=True)
    for split in narrow.values():
        split["text"] = split["text"][:, :, :100]
    files["text100"] = save_npz(narrow, root / "text100.npz")
    files["tfn_run"] = root / "tfn_run"
    assert run_cli(["train", "--model", "tfn", "--dataset", "mosi", "--data",
                    str(files["text_data"]), "--seeds", "1", "--epochs", "1", "--batch", "8",
                    "--out", str(files["tfn_run"]), "--quiet"]) == 0
    for name, text in {
        "python_tag": f'model_name: clgsi\ndataset: mosi\nepochs: !!python/object/apply:'
                      f'os.system ["touch {marker}"]\n',
        "common_dim": "model_name: clgsi\ndataset: mosi\nmodel:\n  common_dim: -4\n",
        "seeds": "model_name: clgsi\ndataset: mosi\nseeds: [abc]\n",
        "model": "model_name: nope\ndataset: mosi\n",
    }.items():
        files[f"config_{name}"] = root / f"config_{name}.yaml"
        files[f"config_{name}"].write_text(text)
    return files


def _self_mm_runs(root: Path, data: Path, bert: Path) -> dict[str, Path]:
    """A finished Self-MM run (one epoch) whose last.pt holds no, a foreign, or a misshapen
    model training state (its unimodal labels): --resume reads it first."""
    run = root / "self_mm_run"
    assert run_cli(["train", "--model", "self_mm", "--dataset", "mosi", "--data", str(data),
                    "--text-encoder", str(bert), "--seeds", "1", "--epochs", "1", "--batch",
                    "8", "--set", "stop_at_horizon=true", "--out", str(run), "--quiet",
                    "--keep-last"]) == 0
    state = torch.load(run / "seed-1" / "last.pt", weights_only=True)
    assert state["model_training_state"]
    runs = {}
    for name, training_state in {
        "none": None, "foreign": {"memory": torch.zeros(3)},
        "shapes": {k: v[:5] for k, v in state["model_training_state"].items()},
    }.items():
        folder = root / f"self_mm_{name}"
        shutil.copytree(run, folder)
        edited = {k: v for k, v in state.items() if k != "model_training_state"}
        if training_state is not None:
            edited["model_training_state"] = training_state
        torch.save(edited, folder / "seed-1" / "last.pt")
        runs[f"self_mm_{name}"] = folder
    return runs


def _extras(root: Path, raw: dict) -> dict[str, Path]:
    """A test split without labels (alone, and under a name that is no split), and config.yaml
    files that are not msakit's or hold a wrong type."""
    from msakit.data.safe_format import save_npz

    unlabelled = {k: v for k, v in raw["test"].items() if not k.startswith("regression_labels")}
    extras = {"unlabelled": save_npz({"test": unlabelled}, root / "unlabelled.npz"),
              "no_split": save_npz({"new": unlabelled}, root / "no_split.npz")}
    for name, text in {"foreign": "model_name: clgsi\ndataset: mosi\nlearning_rate_bert: 5e-5\n",
                       "typed": "model_name: clgsi\ndataset: mosi\nbatch_size: big\n"}.items():
        extras[name] = root / f"{name}.yaml"
        extras[name].write_text(text)
    return extras


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() or path.is_symlink():
                st = path.lstat()
                out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"


def one_error(err: str) -> str:
    """The one ``error:`` line of stderr (other lines may only be warnings or notes, such as the
    one on a pickle's converted copy)."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert all(line.startswith(("error:", "warning:", "note:")) for line in lines), err
    return errors[0]


# --------------------------------------------------------------------------- the cases
def _train(w: World, *extra: str, data: Path | None = None, model: str = "clgsi",
           dataset: str = "mosi", out: str = "{case}/run") -> list[str]:
    bert = w.bert12 if model == "conki" else w.bert
    return ["train", "--model", model, "--dataset", dataset, "--data", str(data or w.data),
            "--text-encoder", str(bert), "--seeds", "1", "--epochs", "1", "--batch", "8",
            "--out", out, "--quiet", *extra]


def _import(w: World, *extra: str, weights: Path | None = None, model: str = "clgsi",
            out: str = "{case}/c.pt") -> list[str]:
    return ["import-weights", "--from", "clgsi-authors", "--model", model, "--dataset", "mosi",
            "--weights", str(weights or w.ckpt), "--data", str(w.data), "--text-encoder",
            str(w.bert), "--out", out, *extra]


def _mmsa_import(w: World, model: str, *extra: str, weights: Path | None = None,
                 data: Path | None = None) -> list[str]:
    return ["import-weights", "--from", "mmsa", "--model", model, "--dataset", "mosi",
            "--weights", str(weights or w.ckpt), "--data", str(data or w.data), "--out",
            "{case}/c.pt", *extra]


def _features_train(w: World, *extra: str, model: str = "tfn") -> list[str]:
    """Train a model that reads the file's text features (TFN, LMF, MulT) on a file without
    them."""
    return ["train", "--model", model, "--dataset", "mosi", "--data", str(w.data), "--seeds",
            "1", "--epochs", "1", "--out", "{case}/run", "--quiet", *extra]


def _tfn(w: World) -> Path:
    return w.extras["tfn_run"] / "seed-1" / "model.safetensors"


def _self_mm_resume(w: World, name: str) -> list[str]:
    return _train(w, "--resume", "--set", "stop_at_horizon=true", model="self_mm",
                  out=str(w.bad_runs[f"self_mm_{name}"]))


def _ck(w: World, command: str, *extra: str, data: Path | None = None,
        ckpt: Path | None = None) -> list[str]:
    return [command, "--checkpoint", str(ckpt or w.ckpt), "--data", str(data or w.data), *extra]


def _custom(w: World, spec: str, command: str = "train") -> list[str]:
    argv = _train(w, "--dataset-spec", str(w.specs[spec]), dataset="custom")
    if command == "train":
        return argv
    return [command, "--model", "clgsi", "--dataset", "custom", "--dataset-spec",
            str(w.specs[spec]), "--data", str(w.data), "--trials", "1", "--out", "{case}/sweep"]


# (id, argv builder, expected exit status, regex the error line must match)
CASES = [
    # ---- data sets: custom specs, aligned files
    ("train-spec-no-range", lambda w: _custom(w, "no_range"), 2, "label_range is missing"),
    ("train-spec-no-zero", lambda w: _custom(w, "no_zero"), 2, r"must hold 0 inside"),
    ("train-spec-family", lambda w: _custom(w, "family"), 2, "metric_family must be one of"),
    ("train-spec-unknown-key", lambda w: _custom(w, "unknown_key"), 2, "unknown key.*labels"),
    ("train-spec-list", lambda w: _custom(w, "list"), 2, "expected a mapping"),
    ("train-spec-yaml", lambda w: _custom(w, "yaml"), 2, "not valid YAML"),
    ("tune-spec-language", lambda w: _custom(w, "language", "tune"), 2,
     "language must be one of en, zh"),
    ("train-spec-missing", lambda w: _train(w, "--dataset-spec", "{case}/none.yaml",
                                            dataset="custom"), 2, "no such file"),
    ("train-custom-alone", lambda w: _train(w, dataset="custom"), 2,
     "--dataset custom takes one of --dataset-spec"),
    ("train-custom-both", lambda w: _train(w, "--label-range", "-3", "3", "--dataset-spec",
                                           str(w.specs["list"]), dataset="custom"), 2,
     "--dataset custom takes one of"),
    ("train-label-range-named", lambda w: _train(w, "--label-range", "-3", "3"), 2,
     "--label-range is for --dataset custom, not --dataset mosi"),
    ("train-label-range-narrow", lambda w: _train(w, "--label-range", "-1", "1",
                                                  dataset="custom"), 2,
     r"outside \[-1, 1\], the range of --dataset custom \(labels in \[-3, 3\]: a MOSI or"),
    ("train-label-range-no-zero", lambda w: _train(w, "--label-range", "0", "5",
                                                   dataset="custom"), 2, "must hold 0 inside"),
    ("train-half-aligned", lambda w: _train(w, data=w.unaligned["half"]), 2,
     "split 'test', key 'audio_lengths': required key is missing \\('vision_lengths' is there"),
    ("evaluate-no-lengths-unaligned", lambda w: _ck(w, "evaluate", data=w.unaligned["none"]), 2,
     "aligned files have one frame per token"),
    # ---- 1. code from data files: no payload runs, on any route
    ("evaluate-pickle-named-npz", lambda w: _ck(w, "evaluate", data=w.evil["npz_p4"]), 2,
     "refused: the pickle calls io.open"),
    ("predict-pickle-named-npz",
     lambda w: _ck(w, "predict", "--out", "{case}/p.csv", data=w.evil["npz_p4"]), 2, "refused"),
    ("train-pickle-named-npz", lambda w: _train(w, data=w.evil["npz_p4"]), 2, "refused"),
    ("train-protocol-2", lambda w: _train(w, data=w.evil["pkl_p2"]), 2, "refused"),
    ("train-shell-payload-csv", lambda w: _train(w, data=w.evil["csv_p5"]), 2, "posix.system"),
    ("convert-pickle", lambda w: ["convert", str(w.evil["pkl_p2"]), "--out", "{case}/x.npz"], 2,
     "refused"),
    ("convert-protocol-0", lambda w: ["convert", str(w.evil["pkl_p0"]), "--out", "{case}/x.npz"],
     2, "refused"),
    ("evaluate-nested-payload", lambda w: _ck(w, "evaluate", data=w.evil["nested"]), 2,
     "refused"),
    ("tune-pickle", lambda w: ["tune", "--model", "clgsi", "--dataset", "mosi", "--data",
                               str(w.evil["pkl_p2"]), "--trials", "1", "--out", "{case}/t"], 2,
     "refused"),
    ("bench-pickle", lambda w: ["bench", "--model", "clgsi", "--dataset", "mosi", "--data",
                                str(w.evil["pkl_p0"]), "--text-encoder", str(w.bert)], 2,
     "refused"),
    ("pretrain-pickle", lambda w: ["pretrain-adapters", "--model", "conki", "--dataset", "mosi",
                                   "--data", str(w.evil["npz_p4"]), "--text-encoder",
                                   str(w.bert12), "--out", "{case}/a"], 2, "refused"),
    ("plot-tsne-pickle", lambda w: ["plot", "tsne", "--checkpoint", str(w.ckpt), "--data",
                                    str(w.evil["pkl_p2"]), "--out", "{case}/t.png"], 2,
     "refused"),
    ("plot-scatter-pickle", lambda w: ["plot", "scatter", "--checkpoint", str(w.ckpt), "--data",
                                       str(w.evil["npz_p4"]), "--out", "{case}/s.png"], 2,
     "refused"),
    ("evaluate-pickle-checkpoint", lambda w: _ck(w, "evaluate", ckpt=w.evil["pt_p2"]), 2,
     "not a readable msakit checkpoint"),
    ("plot-weights-pickle-checkpoint", lambda w: ["plot", "weights", "--checkpoint",
                                                  str(w.evil["pt_p2"]), "--out", "{case}/w.png"],
     2, "checkpoint"),
    ("adapters-pickle", lambda w: _train(w, "--adapters", str(w.evil["pt_p2"]), model="conki"),
     2, "adapters file"),
    # ---- 2. nothing is lost: outputs that are inputs, folders, run folders
    ("predict-out-is-data-npz",
     lambda w: _ck(w, "predict", "--out", str(w.data)), 2, "is also an input"),
    ("predict-out-is-data-pkl",
     lambda w: _ck(w, "predict", "--out", str(w.pkl), data=w.pkl), 2, "is also an input"),
    ("predict-out-is-symlink-to-data",
     lambda w: _ck(w, "predict", "--out", str(w.root / "link.npz")), 2, "is also an input"),
    ("predict-out-is-checkpoint",
     lambda w: _ck(w, "predict", "--out", str(w.ckpt)), 2, "is also an input"),
    ("predict-out-is-folder",
     lambda w: _ck(w, "predict", "--out", str(w.root / "a_folder")), 2, "is a folder"),
    ("log-steps-is-data", lambda w: _train(w, "--log-steps", str(w.data)), 2,
     "--log-steps.*is also an input"),
    ("report-out-is-results", lambda w: ["report", str(w.run), "--out",
                                         str(w.run / "results.csv")], 2, "is also an input"),
    ("report-out-is-folder", lambda w: ["report", str(w.run), "--out", str(w.root / "a_folder")],
     2, "is a folder"),
    ("plot-curves-out-is-history", lambda w: ["plot", "curves", str(w.run), "--out",
                                              str(w.run / "seed-1" / "history.json")], 2,
     "is also an input"),
    ("plot-scatter-out-is-data", lambda w: ["plot", "scatter", "--checkpoint", str(w.ckpt),
                                            "--data", str(w.data), "--out", str(w.data)], 2,
     "is also an input"),
    ("convert-out-is-input", lambda w: ["convert", str(w.pkl), "--out", str(w.pkl)], 2,
     "is also an input"),
    ("convert-out-is-link", lambda w: ["convert", str(w.data), "--out",
                                       str(w.root / "link.npz")], 2, "is also an input"),
    ("synth-out-dash", lambda w: ["synth", "--like", "mosi", "--n", "2", "2", "2", "--out", "-"],
     2, "not to standard output"),
    ("report-format-contradicts-out", lambda w: ["report", str(w.run), "--out", "{case}/t.tex",
                                                 "--format", "csv"], 2, "contradicts"),
    ("convert-file-and-data", lambda w: ["convert", str(w.pkl), "--data", str(w.pkl), "--out",
                                         "{case}/x.npz"], 2, "not both"),
    ("config-show-custom-without-range", lambda w: ["config", "show", "--model", "lmf",
                                                    "--dataset", "custom"], 2,
     "takes one of --dataset-spec"),
    ("synth-out-is-folder", lambda w: ["synth", "--like", "mosi", "--n", "2", "2", "2", "--out",
                                       str(w.root / "a_folder")], 2, "is a folder"),
    ("train-into-existing-run", lambda w: _train(w, out=str(w.run)), 2,
     "already holds a run.*--resume.*--overwrite"),
    ("train-resume-and-overwrite", lambda w: _train(w, "--resume", "--overwrite"), 2,
     "exclude each other"),
    ("train-locked-run", lambda w: _train(w, out="{locked}"), 2, "is being written by process"),
    # ---- 3. silently wrong results: validated before anything is loaded or written
    ("sims-on-mosi-file", lambda w: _train(w, dataset="sims"), 2,
     r"looks like MOSI \(audio 5, vision 20, labels in \[.*\]\); --dataset sims expects"),
    ("conki-sims-on-mosi-file", lambda w: _train(w, model="conki", dataset="sims"), 2,
     "looks like MOSI"),
    ("mosi-on-sims-file", lambda w: _train(w, data=w.sims), 2, "looks like SIMS"),
    ("label-40", lambda w: _train(w, data=w.label40), 2,
     r"label 40 at sample 3 .*outside \[-3, 3\]"),
    ("set-lr-negative", lambda w: _train(w, "--set", "lr=-1"), 2, "lr.text must be a number > 0"),
    ("set-lr-group-zero", lambda w: _train(w, "--set", "lr.audio=0"), 2, "lr.audio"),
    ("set-weight-decay-negative", lambda w: _train(w, "--set", "weight_decay=-1"), 2,
     "weight_decay.text must be at least 0.0"),
    ("set-accumulate-zero", lambda w: _train(w, "--set", "accumulate=0"), 2,
     "accumulate must be at least 1"),
    ("set-accumulate-word", lambda w: _train(w, "--set", "accumulate=many"), 2,
     "expected a int"),
    ("set-clip-value-negative", lambda w: _train(w, "--set", "clip_value=-1"), 2,
     "clip_value must be at least 0.0"),
    ("set-plateau-patience-negative", lambda w: _train(w, "--set", "schedule=plateau",
                                                       "--set", "plateau_patience=-1"), 2,
     "plateau_patience must be at least 0"),
    ("set-schedule-unknown", lambda w: _train(w, "--set", "schedule=step"), 2, "schedule"),
    ("set-dataset", lambda w: _train(w, "--set", "dataset=sims"), 2, "use --dataset"),
    ("set-model-name", lambda w: _train(w, "--set", "model_name=conki"), 2, "use --model"),
    ("set-seeds", lambda w: _train(w, "--set", "seeds=abc"), 2, "use --seeds"),
    ("set-dropout-text", lambda w: _train(w, "--set", "dropout=abc"), 2, "expected a float"),
    ("set-dropout-one", lambda w: _train(w, "--set", "dropout=1"), 2, "dropout must be below 1.0"),
    ("set-width-negative", lambda w: _train(w, "--set", "common_dim=-4"), 2,
     "common_dim must be at least 1"),
    ("set-heads-zero", lambda w: _train(w, "--set", "vision_heads=0"), 2, "vision_heads"),
    ("set-head-dropout", lambda w: _train(w, "--set", "head_dropout=1.5"), 2, "head_dropout"),
    ("set-unknown-key", lambda w: _train(w, "--set", "colour=red"), 2, "unknown key"),
    ("set-no-equals", lambda w: _train(w, "--set", "gamma"), 2, "expected key=value"),
    ("set-bad-yaml", lambda w: _train(w, "--set", "gamma=[1,"), 2, "not a valid value"),
    ("seed-negative", lambda w: _train(w, "--seeds", "-5"), 2,
     r"seeds\[0\] must be at least 0, got -5"),
    ("seed-20-digits", lambda w: _train(w, "--seeds", "12345678901234567890"), 2,
     r"seeds\[0\] must be below 4294967296"),
    ("seeds-repeat", lambda w: _train(w, "--seeds", "3", "3"), 2, "seeds repeat"),
    ("batch-zero", lambda w: _train(w, "--batch", "0"), 2, "batch_size must be at least 1"),
    ("epochs-zero", lambda w: _train(w, "--epochs", "0"), 2, "epochs"),
    ("conki-set-dataset", lambda w: _train(w, "--set", "dataset=sims", model="conki"), 2,
     "use --dataset"),
    ("pretrain-seed-negative", lambda w: ["pretrain-adapters", "--model", "conki", "--dataset",
                                          "mosi", "--data", str(w.data), "--seed", "-1",
                                          "--out", "{case}/a"], 2,
     r"seeds\[0\] must be at least 0, got -1"),
    ("tune-sims-on-mosi", lambda w: ["tune", "--model", "clgsi", "--dataset", "sims", "--data",
                                     str(w.data), "--trials", "1", "--out", "{case}/t"], 2,
     "looks like MOSI"),
    ("tune-garbage-data", lambda w: ["tune", "--model", "clgsi", "--dataset", "mosi", "--data",
                                     str(w.garbage), "--trials", "1", "--out", "{case}/t"], 2,
     "garbage.pkl"),
    ("tune-set-lr-negative", lambda w: ["tune", "--model", "clgsi", "--dataset", "mosi",
                                        "--data", str(w.data), "--trials", "1", "--out",
                                        "{case}/t", "--set", "lr=-1"], 2, "lr.text"),
    ("bench-set-dropout", lambda w: ["bench", "--model", "clgsi", "--dataset", "mosi", "--data",
                                     str(w.data), "--set", "dropout=abc"], 2, "expected a float"),
    ("bench-sims-on-mosi", lambda w: ["bench", "--model", "clgsi", "--dataset", "sims",
                                      "--data", str(w.data), "--text-encoder", str(w.bert)], 2,
     "looks like MOSI"),
    ("evaluate-sims-data", lambda w: _ck(w, "evaluate", data=w.sims), 2, "do not match"),
    ("evaluate-label-40", lambda w: _ck(w, "evaluate", data=w.label40), 2, "label 40"),
    # ---- 4. what used to end in a traceback
    ("train-split-of-one", lambda w: _train(w, data=w.one_train), 2,
     "split 'train' has 1 sample"),
    ("resume-truncated-last",
     lambda w: _train(w, "--resume", out=str(w.bad_runs["last_truncated"])), 2,
     "last.pt: cannot resume"),
    ("resume-foreign-last", lambda w: _train(w, "--resume", out=str(w.bad_runs["last_foreign"])),
     2, "last.pt: cannot resume"),
    ("resume-corrupt-config", lambda w: _train(w, "--resume", out=str(w.bad_runs["yaml"])), 2,
     "config.yaml: cannot read"),
    ("resume-config-list", lambda w: _train(w, "--resume", out=str(w.bad_runs["yaml_list"])), 2,
     "not an msakit config.yaml"),
    ("report-corrupt-results", lambda w: ["report", str(w.bad_runs["csv"])], 2, "results.csv"),
    ("report-corrupt-config", lambda w: ["report", str(w.bad_runs["yaml"])], 2, "config.yaml"),
    ("report-missing-folder", lambda w: ["report", str(w.root / "nope")], 2, "nope"),
    ("plot-corrupt-history", lambda w: ["plot", "curves", str(w.bad_runs["history"]), "--out",
                                        "{case}/c.png"], 2, "history.json"),
    ("evaluate-truncated-checkpoint", lambda w: _ck(w, "evaluate", ckpt=w.bad_ckpt["truncated"]),
     2, "not a readable msakit checkpoint"),
    ("evaluate-checkpoint-list", lambda w: _ck(w, "evaluate", ckpt=w.bad_ckpt["list"]), 2,
     "not an msakit checkpoint"),
    ("evaluate-checkpoint-model-list",
     lambda w: _ck(w, "evaluate", ckpt=w.bad_ckpt["model_list"]), 2, "'model'"),
    ("evaluate-checkpoint-config-types",
     lambda w: _ck(w, "evaluate", ckpt=w.bad_ckpt["config_types"]), 2, "configuration"),
    ("evaluate-checkpoint-dims", lambda w: _ck(w, "evaluate", ckpt=w.bad_ckpt["dims"]), 2,
     "dims"),
    ("evaluate-checkpoint-shapes", lambda w: _ck(w, "evaluate", ckpt=w.bad_ckpt["shapes"]), 2,
     "weights do not fit"),
    ("predict-checkpoint-encoder-config",
     lambda w: _ck(w, "predict", "--out", "{case}/p.csv", ckpt=w.bad_ckpt["no_encoder"]), 2,
     "text_encoder_config"),
    ("predict-run-with-two-seeds",
     lambda w: _ck(w, "predict", "--out", "{case}/p.csv", ckpt=w.bad_runs["two_seeds"]), 2,
     "several seeds .*seed-1, seed-2"),
    ("evaluate-run-with-a-truncated-seed",
     lambda w: _ck(w, "evaluate", ckpt=w.bad_runs["two_seeds_truncated"]), 2,
     "seed-2.model.safetensors"),
    ("evaluate-empty-folder", lambda w: _ck(w, "evaluate", ckpt=w.bad_runs["empty_dir"]), 2,
     "without model.safetensors"),
    ("evaluate-empty-data", lambda w: _ck(w, "evaluate", data=w.empty), 2, "empty"),
    ("evaluate-missing-rate-one", lambda w: _ck(w, "evaluate", "--missing-rates", "0", "1"), 2,
     r"--missing-rates: 1.0 is not a rate in \[0, 1\)"),
    ("evaluate-missing-rate-nan", lambda w: _ck(w, "evaluate", "--missing-rates", "nan"), 2,
     "nan is not a rate"),
    ("evaluate-two-checkpoints-without-rates",
     lambda w: ["evaluate", "--checkpoint", str(w.ckpt), str(w.ckpt), "--data", str(w.data)], 2,
     "need --missing-rates"),
    ("evaluate-missing-rates-garbage-data",
     lambda w: _ck(w, "evaluate", "--missing-rates", "0.3", data=w.garbage), 2, "garbage.pkl"),
    ("set-missing-rate-one", lambda w: _train(w, "--set", "missing_rate=1"), 2,
     "missing_rate.text"),
    ("set-missing-rate-unknown-modality", lambda w: _train(w, "--set", "missing_rate.face=0.2"),
     2, "keys are text, audio, vision"),
    ("evaluate-data-is-folder", lambda w: _ck(w, "evaluate", data=w.root / "a_folder"), 2,
     "directory"),
    ("evaluate-garbage-data", lambda w: _ck(w, "evaluate", data=w.garbage), 2, "garbage.pkl"),
    ("adapters-list", lambda w: _train(w, "--adapters", str(w.bad_adapters["list"]),
                                       model="conki"), 2, "not an msakit adapters file"),
    ("adapters-no-format", lambda w: _train(w, "--adapters", str(w.bad_adapters["no_format"]),
                                            model="conki"), 2, "not an msakit adapters file"),
    ("adapters-model-list", lambda w: _train(w, "--adapters", str(w.bad_adapters["model_list"]),
                                             model="conki"), 2, "'model' is a list"),
    ("adapters-signature-str",
     lambda w: _train(w, "--adapters", str(w.bad_adapters["signature_str"]), model="conki"), 2,
     "'adapter_signature' is a str"),
    ("adapters-missing", lambda w: _train(w, "--adapters", str(w.root / "nope.pt"),
                                          model="conki"), 2, "does not exist"),
    ("predict-out-unwritable", lambda w: _ck(w, "predict", "--out", "/proc/msakit/sub/p.csv"),
     2, "cannot write"),
    ("text-encoder-missing", lambda w: ["train", "--model", "clgsi", "--dataset", "mosi", "--data",
                                        str(w.data), "--text-encoder",
                                        str(w.root / "no_such_bert"), "--out", "{case}/r"], 2,
     "no_such_bert"),
    ("synth-zero-samples", lambda w: ["synth", "--like", "mosi", "--n", "0", "1", "1", "--out",
                                      "{case}/s.npz"], 2, "at least one sample"),
    ("bad-choice", lambda w: ["train", "--model", "nope", "--dataset", "mosi", "--data", "x"], 2,
     "invalid choice"),
    ("unknown-command", lambda w: ["frobnicate"], 2, "invalid choice"),
    # ---- import-weights, extract, merge
    ("import-weights-pickle-payload", lambda w: _import(w, weights=w.evil["pt_p2"]), 2,
     "not a readable state dict"),
    ("import-weights-garbage", lambda w: _import(w, weights=w.garbage), 2,
     "not a readable state dict"),
    ("import-weights-out-is-data", lambda w: _import(w, out=str(w.data)), 2, "also an input"),
    ("import-weights-out-is-weights", lambda w: _import(w, out=str(w.ckpt)), 2, "also an input"),
    ("import-weights-not-the-authors-state", lambda w: _import(w), 2, "best.pt"),
    ("import-weights-wrong-model", lambda w: _import(w, model="conki"), 2, "holds clgsi"),
    ("import-weights-missing-weights", lambda w: _import(w, weights=w.root / "nope.pth"), 2,
     "does not exist"),
    ("import-weights-mmsa-wrong-model", lambda w: _mmsa_import(w, "clgsi"), 2,
     "--from mmsa holds tfn, lmf, mult"),
    ("import-weights-mmsa-file-without-text", lambda w: _mmsa_import(w, "tfn"), 2,
     "key 'text': required key is missing"),
    ("import-weights-mmsa-text-encoder", lambda w: _mmsa_import(w, "mult", "--text-encoder",
                                                                str(w.bert)), 2,
     "drop --text-encoder"),
    ("train-features-model-file-without-text", lambda w: _features_train(w), 2,
     "key 'text': required key is missing"),
    ("train-features-model-text-encoder", lambda w: _features_train(w, "--text-encoder",
                                                                    str(w.bert)), 2,
     "reads the file's precomputed text features"),
    ("extract-missing-csv", lambda w: ["extract", "{case}/nope.csv", "--out", "{case}/x.npz"], 2,
     "nope.csv"),
    ("extract-out-is-csv", lambda w: ["extract", str(w.clips), "--out", str(w.clips)], 2,
     "is also an input"),
    ("extract-pickle-as-csv", lambda w: ["extract", str(w.evil["csv_p5"]), "--out",
                                         "{case}/x.npz"], 2, "evil5.csv"),
    ("extract-bad-vision", lambda w: ["extract", str(w.clips), "--out", "{case}/x.npz",
                                      "--vision-features", "dlib"], 2, "vision-features"),
    ("extract-no-workers", lambda w: ["extract", str(w.clips), "--out", "{case}/x.npz",
                                      "--workers", "0"], 2, "workers"),
    ("merge-pickle-named-npz", lambda w: ["merge", str(w.evil["npz_p4"]), "--out",
                                          "{case}/m.npz"], 2, "not an npz"),
    ("merge-out-is-part", lambda w: ["merge", str(w.data), "--out", str(w.data)], 2,
     "is also an input"),
    ("merge-not-extracted", lambda w: ["merge", str(w.data), "--out", "{case}/m.npz"], 2,
     "msakit extract"),
    ("retokenize-pickle-payload", lambda w: ["retokenize", str(w.evil["npz_p4"]),
                                             "--text-encoder", "minilm", "--out",
                                             "{case}/r.npz"], 2, "refused"),
    ("retokenize-out-is-input", lambda w: ["retokenize", str(w.data), "--text-encoder",
                                           "minilm", "--out", str(w.root / "link.npz")], 2,
     "also an input"),
    ("retokenize-texts-wrong-columns", lambda w: ["retokenize", str(w.data), "--text-encoder",
                                                  "minilm", "--texts", str(w.clips), "--out",
                                                  "{case}/r.npz"], 2, "columns 'id' and 'text'"),
    ("retokenize-no-tokenizer", lambda w: ["retokenize", str(w.data), "--text-encoder",
                                           str(w.bert), "--out", "{case}/r.npz"], 2,
     "no tokenizer"),
    # ---- presets, precision, sweeps, --video
    ("train-unknown-preset", lambda w: _train(w, "--preset", "fastest"), 2, "invalid choice"),
    ("train-conki-authors-preset", lambda w: _train(w, "--preset", "authors", model="conki"), 2,
     "no preset 'authors'"),
    ("train-set-preset", lambda w: _train(w, "--set", "preset=authors"), 2, "--preset"),
    ("train-fp16-on-cpu", lambda w: _train(w, "--set", "amp=fp16"), 2, "CUDA"),
    ("train-amp-unknown", lambda w: _train(w, "--set", "amp=fp32"), 2, "amp must be"),
    ("train-vocab-switch-not-bool", lambda w: _train(w, "--set", "allow_vocab_mismatch=maybe"),
     2, "true or false"),
    ("tune-negative-keep", lambda w: ["tune", "--model", "clgsi", "--dataset", "mosi", "--data",
                                      str(w.data), "--trials", "1", "--keep-checkpoints", "-1",
                                      "--out", "{case}/t"], 2, "keep-checkpoints"),
    ("tune-space-a-yaml-list", lambda w: ["tune", "--model", "clgsi", "--dataset", "mosi",
                                          "--data", str(w.data), "--trials", "1", "--space",
                                          str(w.specs["list"]), "--out", "{case}/t"], 2,
     r"--space .*spec_list.yaml: expected a mapping"),
    ("tune-space-binary", lambda w: ["tune", "--model", "clgsi", "--dataset", "mosi", "--data",
                                     str(w.data), "--trials", "1", "--space", str(w.data),
                                     "--out", "{case}/t"], 2, r"--space .*mosi.npz: cannot read"),
    ("tune-objective-unknown", lambda w: ["tune", "--model", "clgsi", "--dataset", "mosi",
                                          "--data", str(w.data), "--trials", "1", "--objective",
                                          "Accuracy:max", "--out", "{case}/t"], 2,
     "not a validation metric"),
    ("bench-conki-authors-preset", lambda w: ["bench", "--model", "conki", "--dataset", "mosi",
                                              "--data", str(w.data), "--preset", "authors"], 2,
     "no preset 'authors'"),
    ("predict-video-and-data", lambda w: [*_ck(w, "predict", "--out", "{case}/p.csv"), "--video",
                                          str(w.clips)], 2, "--video predicts clips"),
    ("predict-video-standard-checkpoint", lambda w: ["predict", "--checkpoint", str(w.ckpt),
                                                     "--video", str(w.clips)], 2, "extract"),
    ("merge-missing-part", lambda w: ["merge", "{case}/nope.npz", "--out", "{case}/m.npz"], 2,
     "no such file"),
    ("analyze-missing-video", lambda w: ["analyze", "{case}/nope.mp4", "--checkpoint",
                                         str(w.ckpt), "--out", "{case}/o"], 2,
     "no such file or folder"),
    ("analyze-standard-checkpoint", lambda w: ["analyze", str(w.clips), "--checkpoint",
                                               str(w.ckpt), "--out", "{case}/o"], 2, "extract"),
    ("analyze-out-is-file", lambda w: ["analyze", str(w.clips), "--checkpoint", str(w.ckpt),
                                       "--out", str(w.clips)], 2,
     "exists and is not a folder"),
    ("analyze-max-below-min", lambda w: ["analyze", str(w.clips), "--checkpoint", str(w.ckpt),
                                         "--out", "{case}/o", "--min-seconds", "3",
                                         "--max-seconds", "2"], 2, "--max-seconds"),
    # ---- --init-from: another run's checkpoint of the same model, checked before anything
    ("init-from-missing", lambda w: _train(w, "--init-from", "{case}/nope.pt"), 2,
     "--init-from .*nope.pt does not exist"),
    ("init-from-garbage", lambda w: _train(w, "--init-from", str(w.garbage)), 2,
     "--init-from .*garbage.pkl: not a readable msakit checkpoint"),
    ("init-from-truncated", lambda w: _train(w, "--init-from", str(w.bad_ckpt["truncated"])), 2,
     "not a readable msakit checkpoint"),
    ("init-from-pickle-payload", lambda w: _train(w, "--init-from", str(w.evil["pt_p2"])), 2,
     "not a readable msakit checkpoint"),
    ("init-from-list", lambda w: _train(w, "--init-from", str(w.bad_ckpt["list"])), 2,
     "not an msakit checkpoint"),
    ("init-from-model-list", lambda w: _train(w, "--init-from", str(w.bad_ckpt["model_list"])),
     2, "not an msakit checkpoint"),
    ("init-from-another-model", lambda w: _train(w, "--init-from", str(w.ckpt), model="conki"),
     2, "a clgsi checkpoint; the run trains conki"),
    ("init-from-other-settings", lambda w: _train(w, "--init-from", str(w.ckpt), "--set",
                                                  "use_specific=false"), 2,
     "do not fit this run's model .has extra subnet_"),
    ("init-from-several-seeds", lambda w: _train(w, "--init-from", str(w.bad_runs["two_seeds"])),
     2, "--init-from: .*holds several seeds"),
    ("init-from-is-log-steps", lambda w: _train(w, "--init-from", str(w.ckpt), "--log-steps",
                                                str(w.ckpt)), 2, "is also an input"),
    ("set-init-from", lambda w: _train(w, "--set", f"init_from={w.ckpt}"), 2, "use --init-from"),
    ("mmim-set-fraction-zero", lambda w: _train(w, "--set", "mmilb_fraction=0", model="mmim"), 2,
     r"mmilb_fraction must be in \(0, 1\]"),
    ("mmim-set-optimizer", lambda w: _train(w, "--set", "optimizer=sgd", model="mmim"), 2,
     "optimizer must be one of adamw, adam"),
    # ---- prediction without labels, reruns of a saved configuration
    ("predict-unlabelled-other-split",
     lambda w: _ck(w, "predict", "--split", "valid", "--out", "{case}/p.csv",
                   data=w.extras["unlabelled"]), 2, r"no split 'valid' \(the file holds 'test'\)"),
    ("predict-unlabelled-no-standard-split",
     lambda w: _ck(w, "predict", "--out", "{case}/p.csv", data=w.extras["no_split"]), 2,
     "no split to predict on"),
    ("evaluate-unlabelled", lambda w: _ck(w, "evaluate", data=w.extras["unlabelled"]), 2,
     "split 'train' is missing"),
    ("train-config-corrupt-yaml", lambda w: _rerun(w, w.bad_runs["yaml"]), 2, "not valid YAML"),
    ("train-config-yaml-list", lambda w: _rerun(w, w.bad_runs["yaml_list"] / "config.yaml"), 2,
     "not an msakit config.yaml"),
    ("train-config-foreign-key", lambda w: _rerun(w, w.extras["foreign"]), 2,
     "learning_rate_bert: unknown key"),
    ("train-config-wrong-type", lambda w: _rerun(w, w.extras["typed"]), 2,
     "batch_size=big: expected a int"),
    ("train-config-other-model", lambda w: _rerun(w, w.run, "--model", "conki"), 2,
     "the run used --model clgsi, not conki"),
    ("train-config-missing", lambda w: _rerun(w, "{case}/nope.yaml"), 2, "no such file"),
    ("train-config-a-folder-without-one", lambda w: _rerun(w, w.root / "a_folder"), 2,
     "no such file"),
    ("train-config-into-its-own-run", lambda w: [*_rerun(w, w.run)[:-2], "--out", str(w.run)],
     2, "already holds a run"),
    ("train-config-log-steps-is-config",
     lambda w: _rerun(w, w.run, "--log-steps", str(w.run / "config.yaml")), 2,
     "is also an input"),
    ("train-without-model-or-config",
     lambda w: ["train", "--dataset", "mosi", "--data", str(w.data), "--out", "{case}/r"], 2,
     "--model is required"),
    # ---- session 5's surfaces: baselines, import from MMSA, --config, --label-range, resume
    ("import-weights-mmsa-pickle-payload",
     lambda w: _mmsa_import(w, "tfn", weights=w.evil["pt_p2"], data=w.extras["text_data"]), 2,
     "evil.pt: not a readable state dict"),
    ("import-weights-mmsa-truncated",
     lambda w: _mmsa_import(w, "tfn", weights=w.bad_ckpt["truncated"],
                            data=w.extras["text_data"]), 2, "not a readable state dict"),
    ("import-weights-mmsa-foreign-names",
     lambda w: _mmsa_import(w, "tfn", weights=w.bad_ckpt["msakit_tfn_pth"],
                            data=w.extras["text_data"]), 2,
     "not MMSA's TFN weights: unexpected keys"),
    ("import-weights-mmsa-not-tensors",
     lambda w: _mmsa_import(w, "lmf", weights=w.bad_ckpt["not_tensors"],
                            data=w.extras["text_data"]), 2, "not a state dict"),
    ("import-weights-mmsa-garbage",
     lambda w: _mmsa_import(w, "mult", weights=w.garbage, data=w.extras["text_data"]), 2,
     "not a readable state dict"),
    ("train-lmf-file-without-text", lambda w: _features_train(w, model="lmf"), 2,
     "key 'text': required key is missing"),
    ("train-mult-file-without-text", lambda w: _features_train(w, model="mult"), 2,
     "key 'text': required key is missing"),
    ("tune-tfn-file-without-text", lambda w: ["tune", "--model", "tfn", "--dataset", "mosi",
                                              "--data", str(w.data), "--trials", "1", "--out",
                                              "{case}/t"], 2, "key 'text': required key"),
    ("evaluate-tfn-file-without-text", lambda w: _ck(w, "evaluate", ckpt=_tfn(w)), 2,
     "key 'text': required key is missing"),
    ("evaluate-tfn-other-widths",
     lambda w: _ck(w, "evaluate", ckpt=_tfn(w), data=w.extras["sims_text"]), 2,
     "feature sizes 33/709 do not match the checkpoint's 5/20"),
    ("predict-tfn-other-text-width",
     lambda w: _ck(w, "predict", "--out", "{case}/p.csv", ckpt=_tfn(w),
                   data=w.extras["text100"]), 2, "text features 100 wide, the checkpoint's 768"),
    ("init-from-baseline-into-clgsi", lambda w: _train(w, "--init-from", str(_tfn(w))), 2,
     "a tfn checkpoint; the run trains clgsi"),
    ("resume-self-mm-no-training-state", lambda w: _self_mm_resume(w, "none"), 2,
     "last.pt: cannot resume from it .*training state holds nothing; this run keeps"),
    ("resume-self-mm-foreign-training-state", lambda w: _self_mm_resume(w, "foreign"), 2,
     "training state holds memory; this run keeps"),
    ("resume-self-mm-training-state-shapes", lambda w: _self_mm_resume(w, "shapes"), 2,
     r"training state \S+ is \(5.*\), this run needs \(23"),
    ("train-config-python-tag", lambda w: _rerun(w, w.extras["config_python_tag"]), 2,
     "not valid YAML .*python/object/apply:os.system"),
    ("train-config-width-negative", lambda w: _rerun(w, w.extras["config_common_dim"]), 2,
     "common_dim must be at least 1, got -4"),
    ("train-config-seeds-word", lambda w: _rerun(w, w.extras["config_seeds"]), 2,
     r"config_seeds\.yaml: seeds\[0\]: expected int, got str 'abc'"),
    ("train-config-unknown-model", lambda w: _rerun(w, w.extras["config_model"]), 2,
     "unknown model 'nope'"),
    ("train-label-range-reversed", lambda w: _train(w, "--label-range", "3", "-3",
                                                    dataset="custom"), 2,
     r"label_range \[3, -3\] must hold 0 inside"),
    ("set-optimizer-unknown", lambda w: _train(w, "--set", "optimizer=sgdx"), 2,
     "optimizer must be one of adamw, adam, got 'sgdx'"),
    ("self-mm-set-lr-zero", lambda w: _train(w, "--set", "lr.audio=0", model="self_mm"), 2,
     "lr.audio must be a number > 0"),
]


def _rerun(w: World, config: Path | str, *extra: str) -> list[str]:
    return ["train", "--config", str(config), "--data", str(w.data), *extra, "--quiet",
            "--out", "{case}/run"]


@pytest.fixture(scope="module")
def locked_run(world) -> Path:
    """A run folder whose lock is held (by this process, through its own open file: a kernel
    lock refuses a second open file of the same process as it refuses another process)."""
    from msakit.core.files import RunLock

    folder = world.root / "locked"
    with RunLock(folder):
        yield folder


@pytest.mark.parametrize("argv_of, status, pattern",
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_hostile_input(world, locked_run, tmp_path, capsys, argv_of, status, pattern):
    import re

    case = tmp_path / "case"
    case.mkdir()
    argv = [a.replace("{case}", str(case)).replace("{locked}", str(locked_run))
            for a in argv_of(world)]
    inputs = [Path(a) for a in argv if os.path.isfile(a)]
    digests = {p: _digest(p) for p in inputs}
    before = _snapshot(world.root, case)
    capsys.readouterr()
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code == status, err
    assert "Traceback" not in out + err
    line = one_error(err)
    assert re.search(pattern, line), line
    assert not world.marker.exists(), "a pickle payload ran"
    assert _snapshot(world.root, case) == before, "something was written"
    assert {p: _digest(p) for p in inputs} == digests


def test_the_cases_cover_every_command():
    from msakit.cli import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices) - {"demo"}
    w = types.SimpleNamespace(**{f: Path("/x") for f in World.__dataclass_fields__})
    w.evil = w.bad_ckpt = w.bad_runs = w.bad_adapters = w.specs = w.unaligned = {}
    covered = set()
    for case in CASES:
        try:
            covered.add(case[1](w)[0])
        except (KeyError, TypeError):
            covered.add(case[0].split("-")[0])
    assert commands <= covered | {"pretrain-adapters"}, commands - covered
    assert len(CASES) >= 60


# --------------------------------------------------------------------------- the unpickler
def _numpy1_pickle(obj, protocol: int) -> bytes:
    """``obj`` pickled as NumPy 1.x writes it (``numpy.core.*`` module paths)."""
    from numpy._core import multiarray, numeric

    fakes = {}
    for old, real in (("numpy.core.multiarray", multiarray), ("numpy.core.numeric", numeric)):
        module = types.ModuleType(old)
        for name in ("_reconstruct", "scalar", "_frombuffer"):
            if hasattr(real, name):
                fn = getattr(real, name)

                def proxy(*args, _fn=fn):
                    return _fn(*args)

                proxy.__module__, proxy.__qualname__ = old, name
                setattr(module, name, proxy)
        fakes[old] = module

    class Pickler(pickle.Pickler):
        def reducer_override(self, o):
            if isinstance(o, (np.ndarray, np.generic)) and not isinstance(o, np.ndarray) or (
                type(o) is np.ndarray
            ):
                fn, args, *rest = o.__reduce_ex__(protocol)
                mod = fakes.get(fn.__module__.replace("numpy._core", "numpy.core"))
                if mod is not None and hasattr(mod, fn.__name__):
                    return (getattr(mod, fn.__name__), args, *rest)
            return NotImplemented

    import io

    saved = {k: sys.modules.get(k) for k in fakes}
    sys.modules.update(fakes)
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=protocol).dump(obj)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return buf.getvalue()


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("numpy_major", [1, 2])
def test_genuine_feature_pickles_load(tmp_path, protocol, numpy_major):
    """MMSA-style content (float arrays, object id arrays, lists, scalars, str) loads under
    both NumPy module paths and every protocol."""
    from msakit.data.mmsa import load_feature_file
    from msakit.data.synthetic import make_synthetic

    raw = make_synthetic("mosi", 3, 2, 2)
    raw["train"]["raw_text"] = ["a b", "c", "d e f"]
    raw["train"]["extra_scalar"] = np.float64(1.5)
    blob = pickle.dumps(raw, protocol) if numpy_major == 2 else _numpy1_pickle(raw, protocol)
    if numpy_major == 1:
        assert b"numpy.core" in blob and b"numpy._core" not in blob
    path = tmp_path / "f.pkl"
    path.write_bytes(blob)
    loaded = load_feature_file(path)
    np.testing.assert_allclose(loaded.splits["train"].audio[:, :10],
                               np.asarray(raw["train"]["audio"], np.float32)[:, :10])
    assert list(loaded.splits["test"].ids) == [str(x) for x in raw["test"]["id"]]


# --------------------------------------------------------------------------- real processes
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _long_command(world: World, command: str, out: Path) -> tuple[list[str], str]:
    """``command`` set never to end on its own before a Ctrl-C however loaded the machine, and
    a pattern of files (under ``out``) that appear once it works (past its imports, data
    loading and set-up)."""
    if command == "train":
        argv = _train(world, "--set", "early_stop=100000", out=str(out / "run"))
        argv[argv.index("--epochs") + 1] = "100000"
        return argv, "run/seed-1/last.pt"
    if command == "tune":
        return (["tune", "--model", "clgsi", "--dataset", "mosi", "--data", str(world.data),
                 "--text-encoder", str(world.bert), "--trials", "100000", "--epochs", "100000",
                 "--set", "early_stop=100000", "--out", str(out / "sweep"), "--quiet"],
                "sweep/*/trial-0/config.yaml")
    for module in ("av", "cv2", "opensmile", "skimage"):
        pytest.importorskip(module)
    from video_clips import make_clip, moving

    make_clip(out / "clip.mp4", moving(12, (4, 4), (1, 0)))
    rows = "".join(f"c{i},clip.mp4,words {i},1.0\n" for i in range(100000))
    (out / "clips.csv").write_text("id,video,text,label\n" + rows)
    workers = ["--workers", "2"] if command == "extract-workers" else []
    return (["extract", str(out / "clips.csv"), "--out", str(out / "x.npz"), "--quiet",
             *workers], "x.npz.cache/*.npz")


def _wait_until_working(proc: subprocess.Popen, folder: Path, pattern: str) -> None:
    """Until files matching ``pattern`` appear under ``folder`` (the process ending first, or
    10 minutes passing, fails the test with its stderr)."""
    deadline = time.monotonic() + 600
    while not any(folder.glob(pattern)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any(folder.glob(pattern)), proc.communicate(timeout=60)[1]


@pytest.mark.parametrize("moment", ["start-up", "working"])
@pytest.mark.parametrize("command", ["train", "tune", "extract", "extract-workers"])
def test_ctrl_c_is_one_line(world, tmp_path, command, moment):
    """Ctrl-C as a terminal sends it (to the whole process group) at start-up (imports) or
    while the command works: one line, status 130, no traceback, no temporary file left.
    With ``extract --workers 2`` the group holds the worker processes too: they leave Ctrl-C
    to the parent (one seen mid-import printed a KeyboardInterrupt traceback)."""
    argv, working = _long_command(world, command, tmp_path)
    # -X faulthandler: a process that does not end after the Ctrl-C is stopped with SIGABRT,
    # which prints where every thread of it was.
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "msakit", *argv],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=default_signals)
    try:
        if moment == "start-up":
            time.sleep(0.3)
        else:
            _wait_until_working(proc, tmp_path, working)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            pytest.fail(f"still running 300 s after Ctrl-C:\n{proc.communicate(timeout=60)[1]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in out + err, err
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
    if proc.returncode == 130:
        assert "interrupted" in one_error(err)
    assert not list(tmp_path.rglob("*.tmp"))
    assert not held_locks(tmp_path)


def test_file_size_limit_keeps_the_previous_file(world, tmp_path):
    """EFBIG (a full disk looks the same): one line, the previous predictions kept, no temp."""
    out = tmp_path / "pred.csv"
    out.write_text("previous good file\n")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); "
            "from msakit.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *_ck(world, "predict", "--out", str(out),
                                                                  "--overwrite")],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "cannot write" in one_error(proc.stderr)
    assert out.read_text() == "previous good file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv"]


def _existing(tmp_path: Path) -> list[str]:
    """``--checkpoint`` and ``--data`` naming files that exist (declared inputs are checked
    before a command runs)."""
    for name in ("x.pt", "y.npz"):
        (tmp_path / name).write_bytes(b"")
    return ["--checkpoint", str(tmp_path / "x.pt"), "--data", str(tmp_path / "y.npz")]


def test_unexpected_exception_is_one_line_and_a_traceback_file(monkeypatch, capsys, tmp_path):
    from msakit import api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(api, "evaluate", broken)
    assert run_cli(["evaluate", *_existing(tmp_path)]) == 1
    line = one_error(capsys.readouterr().err)
    assert "unexpected ZeroDivisionError: boom" in line
    path = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in path.read_text() and "boom" in path.read_text()
    path.unlink()


def test_oserror_is_one_line(monkeypatch, capsys, tmp_path):
    from msakit import api

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "/data/x")

    monkeypatch.setattr(api, "evaluate", full)
    assert run_cli(["evaluate", *_existing(tmp_path)]) == 1
    assert one_error(capsys.readouterr().err) == "error: /data/x: no space left on the device"


# --------------------------------------------------------------------------- training failures
def test_disk_full_during_training_leaves_no_temp_file(world, tmp_path, monkeypatch, capsys):
    import errno

    real_save = torch.save

    def full_save(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_save)
    out = tmp_path / "run"
    assert run_cli(_train(world, out=str(out))) == 2
    line = one_error(capsys.readouterr().err)
    assert "last.pt: no space left on the device" in line  # model.safetensors is written first
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / "results.csv").exists()
    assert not held_locks(out)


def test_diverged_run_ends_cleanly_and_keeps_the_last_good_last_pt(world, tmp_path, monkeypatch,
                                                                  capsys):
    from msakit.models.clgsi import CLGSI
    from msakit.training.trainer import Trainer

    real = CLGSI.compute_loss
    state = {}

    def poisoned(self, output, batch, *args, **kwargs):
        losses = real(self, output, batch, *args, **kwargs)
        if self.training and state["trainer"].global_step >= state["steps"]:
            losses = type(losses)(losses.loss * float("nan"), losses.task_loss,
                                  losses.parts)
        return losses

    real_prepare = Trainer.prepare

    def prepare(self):
        real_prepare(self)
        state["trainer"], state["steps"] = self, len(self._plan(0))

    monkeypatch.setattr(CLGSI, "compute_loss", poisoned)
    monkeypatch.setattr(Trainer, "prepare", prepare)
    out = tmp_path / "run"
    argv = _train(world, out=str(out))
    argv[argv.index("--epochs") + 1] = "3"
    assert run_cli(argv) == 2
    line = one_error(capsys.readouterr().err)
    steps = state["steps"]
    assert line == (f"error: training diverged at epoch 2, step {steps + 1} (loss nan); lower "
                    "the learning rate")
    last = torch.load(out / "seed-1" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == steps
    assert not (out / "results.csv").exists() and not (out / "seed-1" / "history.json").exists()


def test_a_huge_learning_rate_diverges_with_one_line(world, tmp_path, capsys):
    argv = _train(world, "--set", "lr=1e30", out=str(tmp_path / "run"))
    argv[argv.index("--epochs") + 1] = "3"
    assert run_cli(argv) == 2
    line = one_error(capsys.readouterr().err)
    assert line.startswith("error: training diverged at epoch ") and "lower the learning" in line
    assert not (tmp_path / "run" / "results.csv").exists()


# --------------------------------------------------------------------------- run folders
def test_overwrite_replaces_and_a_lock_of_a_killed_process_is_no_lock(world, tmp_path, capsys):
    """A process killed (SIGKILL) while it held the lock leaves the lock file behind but no
    lock: the next run takes it with no warning and no hand work."""
    out = tmp_path / "run"
    shutil.copytree(world.run, out)
    code = ("import sys; from msakit.core.files import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], env=_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    assert run_cli(_train(world, "--seeds", "2", "--overwrite", out=str(out))) == 2
    assert f"is being written by process {holder.pid}" in one_error(capsys.readouterr().err)
    holder.kill()
    holder.wait()
    assert (out / ".msakit.lock").exists()
    assert run_cli(_train(world, "--seeds", "2", "--overwrite", out=str(out))) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "lock" not in err, err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["2", "mean", "std"]
    assert set(rows[-1].values()) == {"std", ""}  # one seed: the std row is blank
    assert not (out / "seed-1").exists() and not (out / ".msakit.lock").exists()


def test_a_second_training_into_a_running_run_is_refused(world, tmp_path, capsys):
    """Two trainings into one --out: while one process trains, a second one (even with
    --overwrite or --resume) stops with one line naming it and touches none of its files."""
    out = tmp_path / "run"
    argv, working = _long_command(world, "train", tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "msakit", *argv], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_signals)
    try:
        _wait_until_working(proc, tmp_path, working)
        config = _digest(out / "config.yaml")
        for flag in ("--overwrite", "--resume"):
            second = _train(world, flag, "--seeds", "2", "--set", "early_stop=100000",
                            out=str(out))
            second[second.index("--epochs") + 1] = "100000"
            assert run_cli(second) == 2
            line = one_error(capsys.readouterr().err)
            assert f"is being written by process {proc.pid}" in line, line
            assert _digest(out / "config.yaml") == config and not (out / "seed-2").exists()
            assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=300)
    assert proc.returncode == 130 and not held_locks(out)


def test_log_steps_keeps_every_seed(world, tmp_path, capsys):
    log = tmp_path / "steps.jsonl"
    out = tmp_path / "run"
    argv = _train(world, "--log-steps", str(log), out=str(out))
    argv[argv.index("--seeds") + 1:argv.index("--seeds") + 2] = ["1", "2"]
    assert run_cli(argv) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {line["seed"] for line in lines} == {1, 2}
    steps = len([line for line in lines if line["seed"] == 1])
    assert steps > 0 and len(lines) == 2 * steps
    # a resume of the finished run keeps them all
    assert run_cli([*argv, "--resume"]) == 0
    assert [json.loads(line) for line in log.read_text().splitlines()] == lines


# --------------------------------------------------------------------------- the newcomer's CLI
def test_msakit_alone_prints_usage_and_commands(capsys):
    assert run_cli([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: msakit") and "train" in out and "evaluate" in out
    from msakit.models.registry import model_spec

    assert all(model_spec(name).title in " ".join(out.split()) for name in BUILTIN)


def test_version(capsys):
    from msakit import __version__

    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"msakit {__version__}"


def _parsers(parser):
    """(command words, parser) of the parser and every sub-command's, depth first."""
    import argparse

    yield parser.prog.split()[1:], parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_help_shows_its_defaults(capsys):
    """Every command's --help runs, and every option with a default says it (the formatter adds
    "(default: X)" to an option's help; an option without help would show none)."""
    import argparse

    from msakit.cli import build_parser

    checked = 0
    for words, parser in _parsers(build_parser()):
        assert run_cli([*words, "--help"]) == 0
        assert capsys.readouterr().out.startswith("usage: msakit")
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.default in (
                None, False, [], argparse.SUPPRESS
            ):
                continue
            text = formatter._get_help_string(action)
            assert action.help and "default" in text, (words, action.option_strings, text)
            checked += 1
    assert checked >= 15  # the walk reached the sub-commands


def test_evaluate_takes_a_run_folder_and_predictions_have_6_digits(world, tmp_path, capsys):
    assert run_cli(["evaluate", "--checkpoint", str(world.run), "--data", str(world.data)]) == 0
    from_folder = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert run_cli(["evaluate", "--checkpoint", str(world.ckpt), "--data", str(world.data)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == from_folder
    out = tmp_path / "p.csv"
    assert run_cli(["predict", "--checkpoint", str(world.run), "--data", str(world.data),
                    "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    for row in rows:
        digits = row["prediction"].lstrip("-").replace(".", "").split("e")[0].lstrip("0")
        assert len(digits) <= 6, row


def test_synth_npz_is_an_npz(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert run_cli(["synth", "--like", "sims", "--n", "3", "2", "2", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"PK\x03\x04"
    from msakit.data.mmsa import load_feature_file

    assert len(load_feature_file(out).splits["train"]) == 3


def _unlabelled_test_split(path: Path, out: Path) -> Path:
    """``path``'s test split without its labels, alone in ``out``."""
    from msakit.data.safe_format import save_npz

    with np.load(path, allow_pickle=False) as z:
        test = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("test/")}
    assert "regression_labels" in test and "text" in test
    return save_npz({"test": {k: v for k, v in test.items()
                              if not k.startswith("regression_labels")}}, out)


@pytest.mark.parametrize("model", BUILTIN)
def test_every_model_logs_one_line_per_epoch_and_predicts_without_labels(world, model,
                                                                        tmp_path, capsys):
    """Without a terminal every model prints one line per epoch (MMIM's two passes included),
    and predicts on a file without labels with 6 significant digits."""
    from msakit.models.registry import model_spec

    out = tmp_path / "run"
    # SIMS for the models only SIMS's unimodal labels train (MTFN, MLMF, MLF-DNN), else MOSI
    dataset = "mosi" if "mosi" in model_spec(model).presets else "sims"
    data = world.extras["text_data" if dataset == "mosi" else "sims_text"]
    # MTFN's SIMS preset (MMSA's) fuses 257 x 33 x 257 values into 64: 139M weights, which
    # Adam and two checkpoints per epoch make the slowest test of the suite; smaller here.
    small = ["--set", "text_out=32", "--set", "vision_hidden=32"] if model == "mtfn" else []
    argv = [a for a in _train(world, "--set", "stop_at_horizon=true", *small, model=model,
                              data=data, dataset=dataset, out=str(out)) if a != "--quiet"]
    argv[argv.index("--epochs") + 1] = "2"
    if model_spec(model).text_input == "features":
        at = argv.index("--text-encoder")
        del argv[at:at + 2]
    assert run_cli(argv) == 0, capsys.readouterr().err
    lines = [line for line in capsys.readouterr().err.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in lines] == ["seed 1 epoch 1/2", "seed 1 epoch 2/2"]
    assert all("valid MAE" in line and line.endswith(" s") for line in lines), lines
    data = _unlabelled_test_split(data, tmp_path / "unlabelled.npz")
    predictions = tmp_path / "p.csv"
    assert run_cli(["predict", "--checkpoint", str(out), "--data", str(data), "--out",
                    str(predictions)]) == 0
    assert "no labels" in capsys.readouterr().out
    with open(predictions) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and set(rows[0]) == {"id", "prediction"}
    for row in rows:
        value = float(row["prediction"])
        assert np.isfinite(value) and row["prediction"] == f"{value:.6g}", row


@pytest.mark.parametrize("failure", [
    RecursionError("maximum recursion depth exceeded"),
    OSError(5, "Input/output error"),
])
def test_a_failure_after_ctrl_c_is_an_interruption_not_a_bug(capsys, failure):
    """Ctrl-C inside an import can leave a library half-initialised so that the command then
    fails otherwise (seen: NumPy's lazy attributes recursing), and one inside torch.save's
    writer comes back from C++ as a RuntimeError that msakit's atomic writer reports as
    "cannot write" (seen in a tune trial): still status 130, one line."""
    from msakit.core.errors import MsakitError
    from msakit.core.guard import run_guarded

    def command() -> int:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:  # swallowed, as an import machinery may do
            pass
        raise failure

    def writer() -> int:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt as exc:  # what msakit.core.files does with torch's RuntimeError
            raise MsakitError("cannot write best.pt: [enforce fail at inline_container.cc]"
                              ) from exc
        return 0

    def bad_input() -> int:
        raise MsakitError("bad input")

    for fn in (command, writer):
        assert run_guarded(fn) == 130
        assert one_error(capsys.readouterr().err).startswith("error: interrupted")
    assert run_guarded(bad_input) == 2  # without a Ctrl-C, the failure itself
    assert one_error(capsys.readouterr().err) == "error: bad input"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_python_cannot_raise_is_delivered_again(capsys):
    """A Ctrl-C landing in a ctypes callback (openSMILE calls one per frame during extract) is
    swallowed by Python ("Exception ignored ... Traceback") and the command would go on: it is
    not printed, and is delivered again until it stops the command."""
    import ctypes

    from msakit.core.guard import run_guarded

    libc = ctypes.CDLL(None)
    order = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                             ctypes.POINTER(ctypes.c_int))
    pressed = []

    def compare(a, b) -> int:
        if not pressed:
            pressed.append(True)
            signal.raise_signal(signal.SIGINT)  # handled here, inside the callback
        return a[0] - b[0]

    def command() -> int:
        values = (ctypes.c_int * 20)(*range(20, 0, -1))
        libc.qsort(values, 20, ctypes.sizeof(ctypes.c_int), order(compare))
        assert list(values) == list(range(1, 21))  # the callback went on after the Ctrl-C
        deadline = time.monotonic() + 600  # a backstop only: the Ctrl-C must stop the loop
        while time.monotonic() < deadline:  # the rest of the command
            time.sleep(0.01)
        return 0

    hook = sys.unraisablehook
    assert run_guarded(command) == 130
    err = capsys.readouterr().err
    assert pressed and "Traceback" not in err and "Exception ignored" not in err, err
    assert one_error(err).startswith("error: interrupted")
    assert sys.unraisablehook is hook
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_nan_validation_loss_ends_cleanly(world, tmp_path, monkeypatch, capsys):
    """Training stays finite but the model predicts NaN on the validation split (the red team's
    "FileNotFoundError best.pt"): one line, nothing half-written (no best.pt, no results)."""
    from msakit.models.clgsi import CLGSI

    real = CLGSI.forward

    def forward(self, batch, **kwargs):
        output = real(self, batch, **kwargs)
        if not self.training:
            output.prediction = output.prediction * float("nan")
        return output

    monkeypatch.setattr(CLGSI, "forward", forward)
    out = tmp_path / "run"
    assert run_cli(_train(world, out=str(out))) == 2
    line = one_error(capsys.readouterr().err)
    assert line.startswith("error: training diverged at epoch 1, step ") and (
        "(validation loss nan); lower the learning rate" in line), line
    assert not (out / "results.csv").exists()
    assert not (out / "seed-1" / "model.safetensors").exists()
    assert not list(out.rglob("*.tmp")) and not held_locks(out)


def test_a_command_that_hangs_after_ctrl_c_is_ended(tmp_path):
    """A library that never returns after Ctrl-C (seen once: a tune trial stuck after the
    interruption, nothing printed) does not keep the command alive: after the grace period,
    status 130, one line naming the file that shows where every thread waited."""
    code = ("import sys, threading, msakit.core.guard as guard\n"
            "guard.CTRL_C_GRACE = 1.0\n"
            "def stuck():\n"
            "    lock = threading.Lock(); lock.acquire()\n"
            "    said = False\n"
            "    while True:\n"
            "        try:\n"
            "            if not said:\n"
            "                said = True\n"
            "                print('working', flush=True)  # a Ctrl-C after it is swallowed\n"
            "            lock.acquire()\n"
            "        except KeyboardInterrupt:\n"
            "            pass  # swallowed, as a library might\n"
            "sys.exit(guard.run_guarded(stuck))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=default_signals)
    try:
        assert proc.stdout.readline() == "working\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = one_error(err)
    assert "did not stop within 1 s" in line
    dump = Path(line.rsplit("where it waited: ", 1)[1])
    assert "stuck" in dump.read_text()  # the main thread's stack, in the named file
    dump.unlink()
