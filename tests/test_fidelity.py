"""Reproducing the papers: named presets, defaults that keep each method's stochastic process,
the text encoder that follows the data set, the vocabulary check and ``msakit retokenize``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import best_checkpoint, run_cli, write_short_synthetic

from msakit import api
from msakit.config import DEFAULT_SEEDS, RunConfig
from msakit.config.datasets import dataset_spec
from msakit.config.presets import apply_preset_entry
from msakit.core.errors import MsakitError
from msakit.data.mmsa import load_feature_file
from msakit.data.tokens import check_vocabulary, read_texts_csv
from msakit.encoders.text import PACKAGED_TEXT_ENCODER, load_text_encoder, load_tokenizer
from msakit.models.clgsi import CLGSI_AUTHORS
from msakit.models.registry import model_names, model_spec, preset, preset_note
from msakit.reporting.report import report
from msakit.training.inputs import load_encoder_and_data

SMALL = ["--set", "feedforward=32", "--set", "common_dim=16", "--set", "specific_dim=16",
         "--set", "head_dim=16"]
FRAMES = {"audio": 20, "vision": 16}
ENGLISH = ["what a wonderful film , i loved every minute", "the plot was boring and far too long",
           "it is okay i guess", "terrible acting but great music", "not bad at all"]
CHINESE = ["这部电影非常好看", "我不喜欢这个结局", "演员的表演很自然", "音乐太吵了", "还可以吧"]


def error_line(err: str) -> str:
    """The one ``error:`` line of a failed command (other lines may only be warnings/notes)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert all(line.startswith(("error:", "warning:", "note:")) for line in lines), err
    return errors[0]


def fails(argv: list[str], capsys, *needles: str) -> str:
    capsys.readouterr()
    assert run_cli(argv) == 2
    line = error_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return load_tokenizer(PACKAGED_TEXT_ENCODER)


def with_texts(path: Path, texts: list[str], out: Path) -> Path:
    """A copy of the pickle ``path`` whose every sample has a raw_text (cycling ``texts``)."""
    with open(path, "rb") as f:
        data = pickle.load(f)
    for split in data.values():
        n = len(split["id"])
        split["raw_text"] = np.array([texts[i % len(texts)] for i in range(n)], dtype=object)
    with open(out, "wb") as f:
        pickle.dump(data, f)
    return out


@pytest.fixture(scope="module")
def short_mosi(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fidelity")
    return write_short_synthetic(root / "mosi.pkl", "mosi", (16, 6, 6), FRAMES)


@pytest.fixture(scope="module")
def short_sims(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fidelity_sims")
    return write_short_synthetic(root / "sims.pkl", "sims", (12, 5, 5), FRAMES)


# --------------------------------------------------------------------------- named presets
@pytest.mark.parametrize("model", model_names())
def test_paper_is_the_default_preset_with_random_batches_and_five_seeds(model):
    """Every model, the six MMSA baselines included: no preset draws length buckets, and the
    paper presets run MMSA's five seeds."""
    for dataset in model_spec(model).datasets():
        config = api.build_config(model, dataset)
        assert config.preset == "paper"
        assert config.sampler == "random"
        assert config.seeds == list(DEFAULT_SEEDS) == [1111, 1112, 1113, 1114, 1115]
        assert config.to_dict() == preset(model, dataset, "paper").to_dict()
        for name in model_spec(model).preset_names():
            assert preset(model, dataset, name).sampler == "random", (name, dataset)
    assert api.build_config(model, model_spec(model).datasets()[0], seeds=[7]).seeds == [7]


def test_authors_preset_is_the_paper_preset_with_the_authors_entry_on_top():
    for dataset in ("mosi", "mosei", "sims"):
        paper = preset("clgsi", dataset).to_dict()
        authors = preset("clgsi", dataset, "authors").to_dict()
        assert authors["preset"] == "authors"
        assert authors["sampler"] == "random"
        assert authors["model"]["variant"] == "official"
        assert authors["model"]["label_scale"] == 3.0
        entry = CLGSI_AUTHORS[dataset]["run"]
        changed = {k for k in paper if paper[k] != authors[k]} - {"preset", "model"}
        assert changed <= set(entry)  # only what the entry names moved
        for group_key in ("lr", "weight_decay"):  # merged group by group
            assert authors[group_key] == {**paper[group_key], **entry.get(group_key, {})}
        model_changes = {k for k in paper["model"] if paper["model"][k] != authors["model"][k]}
        assert model_changes <= set(CLGSI_AUTHORS[dataset]["model"])
    mosi = preset("clgsi", "mosi", "authors")
    paper_mosi = preset("clgsi", "mosi")
    # Table 7 has visual 5e-3 / audio 1e-3; the released config the other way round.
    assert (paper_mosi.lr["audio"], paper_mosi.lr["vision"]) == (1e-3, 5e-3)
    assert (mosi.lr["audio"], mosi.lr["vision"]) == (5e-3, 1e-3)
    assert (mosi.lr["text"], mosi.lr["other"]) == (paper_mosi.lr["text"], paper_mosi.lr["other"])
    assert preset("clgsi", "sims").model["label_scale"] == 1.0  # the paper's SIMS value


def test_clgsi_subnet_reduction_is_the_papers_and_the_authors_mosi_value_theirs():
    """Sec. 3.3 writes W_1 in R^{(d_m/8) x d_m} (r = 8) for every data set; the released MOSI
    config has skip_net_reduction 2, which only --preset authors takes."""
    for dataset in ("mosi", "mosei", "sims", "simsv2"):
        assert preset("clgsi", dataset).model["subnet_reduction"] == 8, dataset
        expected = 2 if dataset == "mosi" else 8
        assert preset("clgsi", dataset, "authors").model["subnet_reduction"] == expected, dataset


def test_authors_preset_on_sims_v2_is_their_sims_entry_with_their_v2_label_mapping():
    """The authors' code has no CLGSI settings for simsv2 (their run.py stops there), but their
    loss leaves simsv2 labels unscaled: msakit completes their SIMS entry with H = 1 and says
    so; other data sets carry no note."""
    v2, sims = preset("clgsi", "simsv2", "authors"), preset("clgsi", "sims", "authors")
    assert v2.preset == "authors" and v2.model["label_scale"] == 1.0
    assert v2.model["audio_heads"] == 5  # 25 eGeMAPS features; SIMS's 3 heads do not divide it
    same = {k: v for k, v in v2.model.items() if k not in ("label_scale", "audio_heads")}
    assert same == {k: sims.model[k] for k in same}
    assert (v2.sampler, v2.seeds, v2.lr, v2.fractional_warmup, v2.stop_at_horizon) == (
        sims.sampler, sims.seeds, sims.lr, sims.fractional_warmup, sims.stop_at_horizon)
    assert v2.model["encoder_mask"] is False and v2.model["variant"] == "official"
    assert "no CLGSI settings for simsv2" in preset_note("clgsi", "simsv2", "authors")
    for dataset in ("mosi", "mosei", "sims"):
        assert preset_note("clgsi", dataset, "authors") is None
    assert preset_note("clgsi", "simsv2", "paper") is None


def test_a_named_preset_without_an_entry_for_a_data_set_takes_its_presets_from_entry(
        monkeypatch):
    monkeypatch.setitem(model_spec("misa").named_presets, "trial",
                        {"sims": {"model": {"hidden_size": 48}}})
    assert api.build_config("misa", "simsv2", preset="trial").model["hidden_size"] == 48
    assert api.build_config("misa", "simsv2").model["hidden_size"] != 48


def test_authors_preset_on_sims_v2_trains_with_a_note(tiny_bert, tmp_path, capsys):
    data = write_short_synthetic(tmp_path / "simsv2.pkl", "simsv2", (8, 4, 4), FRAMES)
    out = tmp_path / "run"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "simsv2", "--data", str(data),
                    "--text-encoder", str(tiny_bert), "--preset", "authors", "--epochs", "1",
                    "--seeds", "1", "--batch", "4", "--set", "stop_at_horizon=true",
                    "--out", str(out), *SMALL]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines()
             if "no CLGSI settings for simsv2" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["preset"] == "authors" and config["model"]["label_scale"] == 1.0
    assert config["model"]["encoder_mask"] is False and config["seeds"] == [1]


def test_preset_entries_reach_any_run_field_and_model_key_and_merge_groups():
    base = preset("clgsi", "mosei")
    entry = {"run": {"early_stop": 3, "bf16": True, "weight_decay": {"audio": 0.5}},
             "model": {"gamma": 0.1, "fusion": "add"}}
    out = apply_preset_entry(base, entry)
    assert (out.early_stop, out.bf16, out.model["gamma"], out.model["fusion"]) == (
        3, True, 0.1, "add")
    assert out.weight_decay == {**base.weight_decay, "audio": 0.5}
    assert base.early_stop != 3  # the input is not changed
    for bad, needle in (({"run": {"no_such": 1}}, "'no_such' is not a run setting"),
                        ({"model": {"no_such": 1}}, "no hyperparameter 'no_such'"),
                        ({"run": {"lr": {"bass": 1.0}}}, "unknown lr group")):
        with pytest.raises(MsakitError, match=needle):
            apply_preset_entry(base, bad)


def test_a_model_declares_its_named_presets_in_one_mapping(monkeypatch):
    monkeypatch.setitem(model_spec("conki").named_presets, "trial",
                        {"sims": {"run": {"lr": {"text": 1e-5}}, "model": {"lam": 0.5}}})
    config = api.build_config("conki", "sims", preset="trial")
    assert (config.preset, config.lr["text"], config.model["lam"]) == ("trial", 1e-5, 0.5)
    # a data set the entry does not name gets the paper values under the preset's name
    assert api.build_config("conki", "mosi", preset="trial").model["lam"] == 0.01
    with pytest.raises(MsakitError, match="conki has no preset 'authors'; choose paper, trial"):
        api.build_config("conki", "mosi", preset="authors")


def test_preset_cannot_be_set_by_name_and_conki_has_no_authors_preset(tmp_path, capsys):
    with pytest.raises(MsakitError, match="--preset NAME"):
        api.build_config("clgsi", "mosi", overrides=["preset=authors"])
    out, data = tmp_path / "run", tmp_path / "x.pkl"
    data.write_bytes(b"")  # declared inputs are checked first: the preset's refusal comes next
    fails(["train", "--model", "conki", "--dataset", "mosi", "--data", str(data), "--preset",
           "authors", "--out", str(out)], capsys, "conki has no preset 'authors'")
    fails(["pretrain-adapters", "--model", "conki", "--dataset", "mosi", "--data", str(data),
           "--preset", "authors", "--out", str(out)], capsys, "--preset")
    assert not out.exists()


def test_preset_is_recorded_and_checked_by_resume(short_mosi, tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(short_mosi),
            "--text-encoder", str(tiny_bert), "--out", str(out), "--epochs", "1", "--seeds", "3",
            "--batch", "8", "--quiet", "--preset", "authors", *SMALL,
            "--set", "stop_at_horizon=true"]  # one epoch, not until early stopping
    assert run_cli(argv) == 0, capsys.readouterr().err
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["preset"] == "authors" and config["model"]["variant"] == "official"
    ckpt = best_checkpoint(out / "seed-3")
    assert ckpt["config"]["preset"] == "authors"
    assert api.load_checkpoint(out / "seed-3").config.preset == "authors"
    paper = [a for a in argv if a not in ("--preset", "authors")]
    fails([*paper, "--resume"], capsys, "started with --preset authors, not paper")
    assert run_cli([*argv, "--resume"]) == 0, capsys.readouterr().err


def test_report_labels_runs_by_preset(tmp_path):
    names = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5",
             "Mult_acc_7", "MAE", "Corr"]
    for name in ("paper", "authors"):
        folder = tmp_path / f"run-{name}"
        folder.mkdir()
        config = api.build_config("clgsi", "mosi", preset=name, seeds=[1111, 1112])
        (folder / "config.yaml").write_text(config.to_yaml())
        rows = [",".join(["seed", *names]), ",".join(["1111", *["0.5"] * 8]),
                ",".join(["1112", *["0.6"] * 8])]
        (folder / "results.csv").write_text("\n".join(rows) + "\n")
    table = report([tmp_path / "run-paper", tmp_path / "run-authors"], fmt="csv", label="config")
    labels = [line.split(",")[0] for line in table.strip().splitlines()[1:]]
    assert labels == ["preset=paper", "preset=authors"]


def test_bench_and_tune_take_the_preset(short_mosi, tiny_bert, tmp_path):
    from msakit.bench import bench
    from msakit.tune import tune

    result = bench("clgsi", "mosi", short_mosi, batch=8, text_encoder=str(tiny_bert),
                   overrides=SMALL[1::2], warmup_steps=1, max_steps=1, preset="authors")
    assert result["preset"] == "authors" and result["sampler"] == "random"
    tuned = tune("clgsi", "mosi", short_mosi, trials=1, out=tmp_path / "tune", epochs=1,
                 text_encoder=str(tiny_bert), batch=8, overrides=SMALL[1::2], quiet=True,
                 preset="authors")
    assert "--preset authors" in tuned.best["command"]
    assert tuned.best["config"]["preset"] == "authors"
    trial_dir = tmp_path / "tune" / "msakit-clgsi-mosi" / "trial-0"
    trial = yaml.safe_load((trial_dir / "config.yaml").read_text())
    assert trial["preset"] == "authors" and trial["model"]["variant"] == "official"


# --------------------------------------------------------------------------- text encoders
def test_the_text_encoder_follows_the_data_set():
    assert api.build_config("clgsi", "mosi").text_encoder == "bert-base-uncased"
    assert api.build_config("conki", "mosei").text_encoder == "bert-base-uncased"
    assert api.build_config("clgsi", "sims").text_encoder == "bert-base-chinese"
    # ConKI reads SIMS in English translation with the uncased BERT (its Appendices B and C)
    assert api.build_config("conki", "sims").text_encoder == "bert-base-uncased"
    assert api.build_config("clgsi", "sims", text_encoder="minilm").text_encoder == "minilm"
    encoder = load_text_encoder(PACKAGED_TEXT_ENCODER)
    assert encoder.config.hidden_size == 384 and encoder.config.vocab_size == 30522


ENCODER_MODELS = [m for m in model_names() if model_spec(m).text_input == "encoder"]


def test_every_model_that_fine_tunes_bert_takes_the_data_sets_encoder():
    """MMSA's text encoders: bert-base-uncased for English, bert-base-chinese for SIMS (and SIMS
    v2); ConKI reads SIMS in English translation. Models on the files' text features load
    none."""
    assert {"clgsi", "conki", "misa", "self_mm", "mmim"} <= set(ENCODER_MODELS)
    for model in model_names():
        for dataset in model_spec(model).datasets():
            encoder = api.build_config(model, dataset).text_encoder
            if model not in ENCODER_MODELS:
                assert encoder is None, (model, dataset)
            elif model == "conki":
                assert encoder == "bert-base-uncased", dataset
            else:
                want = {"en": "bert-base-uncased", "zh": "bert-base-chinese"}
                assert encoder == want[dataset_spec(dataset).language], (model, dataset)


@pytest.mark.parametrize("model", ENCODER_MODELS)
def test_offline_without_a_copy_is_one_error_naming_both_ways_out(model, short_sims, tmp_path,
                                                                  capsys):
    from huggingface_hub import try_to_load_from_cache

    """The Done-when try-out: a SIMS file with Chinese raw_text and no --text-encoder."""
    wanted = api.build_config(model, "sims").text_encoder
    if isinstance(try_to_load_from_cache(wanted, "config.json"), str):
        pytest.skip(f"{wanted} is in this machine's Hugging Face cache")
    data = with_texts(short_sims, CHINESE, tmp_path / "sims_text.pkl")
    out = tmp_path / "run"
    line = fails(["train", "--model", model, "--dataset", "sims", "--data", str(data),
                  "--out", str(out), "--epochs", "1", "--quiet"], capsys,
                 f"'{wanted}'", "--text-encoder DIR", "--text-encoder minilm")
    assert "not in the local Hugging Face cache" in line
    assert not out.exists()


def test_offline_mosi_names_the_english_encoder(short_mosi, tmp_path, capsys):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("bert-base-uncased", "config.json"), str):
        pytest.skip("bert-base-uncased is in this machine's Hugging Face cache")
    out = tmp_path / "run"
    line = fails(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(short_mosi),
                  "--out", str(out), "--epochs", "1", "--quiet"], capsys,
                 "'bert-base-uncased'", "--text-encoder DIR", "--text-encoder minilm")
    assert "not in the local Hugging Face cache" in line
    assert not out.exists()


# --------------------------------------------------------------------------- vocabulary check
@pytest.mark.parametrize("model", ENCODER_MODELS)
def test_every_bert_model_refuses_ids_of_another_vocabulary(model, short_sims, tmp_path,
                                                            capsys):
    """The Done-when try-out for every model that fine-tunes BERT: SIMS ids (Chinese raw_text)
    read by the English MiniLM are one error line; allow_vocab_mismatch lets them through."""
    data = with_texts(short_sims, CHINESE, tmp_path / "sims_text.pkl")
    out = tmp_path / "run"
    fails(["train", "--model", model, "--dataset", "sims", "--data", str(data),
           "--text-encoder", "minilm", "--out", str(out), "--epochs", "1", "--seeds", "1",
           "--quiet"], capsys, str(data), "do not come from the tokenizer of text encoder "
          "'minilm'", "--text-encoder NAME|DIR", "msakit retokenize",
          "allow_vocab_mismatch=true")
    assert not out.exists()
    config = api.build_config(model, "sims", text_encoder="minilm",
                              overrides=["allow_vocab_mismatch=true"])
    assert load_encoder_and_data(config, data)[1].splits["train"].raw_text[0] == CHINESE[0]


def test_ids_from_the_encoders_own_tokenizer_pass(short_mosi, tmp_path, minilm_tokenizer):
    data = with_texts(short_mosi, ENGLISH, tmp_path / "mosi_text.pkl")
    with open(data, "rb") as f:
        raw = pickle.load(f)
    for split in raw.values():
        enc = minilm_tokenizer(list(split["raw_text"]), max_length=50, truncation=True,
                               padding="max_length")
        split["text_bert"] = np.stack([np.array(enc["input_ids"]), np.array(enc["attention_mask"]),
                                       np.array(enc["token_type_ids"])], axis=1).astype(float)
    with open(data, "wb") as f:
        pickle.dump(raw, f)
    config = api.build_config("clgsi", "mosi", text_encoder="minilm")
    _, features = load_encoder_and_data(config, data)
    assert check_vocabulary(features, minilm_tokenizer, "minilm") == 1.0
    # the synthetic ids are random word pieces: the same texts do not match them
    with pytest.raises(MsakitError, match="do not come from the tokenizer"):
        load_encoder_and_data(config, with_texts(short_mosi, ENGLISH, tmp_path / "other.pkl"))


def test_files_without_raw_text_are_not_checked(short_sims, minilm_tokenizer):
    features = load_feature_file(short_sims)
    assert all(s.raw_text is None for s in features.splits.values())
    assert check_vocabulary(features, minilm_tokenizer, "minilm") is None


# --------------------------------------------------------------------------- retokenize
def test_retokenize_applies_the_tokenizer_to_raw_text(short_mosi, tmp_path, capsys,
                                                      minilm_tokenizer):
    src = with_texts(short_mosi, ENGLISH, tmp_path / "src.pkl")
    with open(src, "rb") as f:
        raw = pickle.load(f)
    for split in raw.values():  # precomputed BERT features, tied to the old tokens
        split["text"] = np.ones((len(split["id"]), 50, 4), dtype=np.float32)
    with open(src, "wb") as f:
        pickle.dump(raw, f)
    out = tmp_path / "re.npz"
    assert run_cli(["retokenize", str(src), "--text-encoder", "minilm", "--max-length", "8",
                    "--out", str(out)]) == 0, capsys.readouterr().err
    assert "text length 8" in capsys.readouterr().out
    before, after = load_feature_file(src), load_feature_file(out)
    with np.load(out, allow_pickle=False) as archive:
        assert not any(name.endswith("/text") for name in archive.files)
    for name, split in after.splits.items():
        texts = list(raw[name]["raw_text"])
        own = minilm_tokenizer(texts, max_length=8, truncation=True, padding="max_length")
        np.testing.assert_array_equal(split.text_bert[:, 0], own["input_ids"])
        np.testing.assert_array_equal(split.text_bert[:, 1], own["attention_mask"])
        np.testing.assert_array_equal(split.text_bert[:, 2], own["token_type_ids"])
        assert (split.text_bert[:, 0, 0] == minilm_tokenizer.cls_token_id).all()
        assert list(split.raw_text) == texts
        old = before.splits[name]
        np.testing.assert_array_equal(split.audio, old.audio)
        np.testing.assert_array_equal(split.labels, old.labels)
        np.testing.assert_array_equal(split.ids, old.ids)
    # the file's own text length by default
    assert run_cli(["retokenize", str(src), "--text-encoder", "minilm", "--out",
                    str(tmp_path / "full.npz")]) == 0
    assert load_feature_file(tmp_path / "full.npz").text_len == 50


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "id,text") -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(header + "\n")
        csv.writer(f).writerows(rows)
    return path


def test_retokenize_with_translations_from_a_csv(short_sims, tmp_path, minilm_tokenizer):
    features = load_feature_file(short_sims)
    ids = [str(i) for s in features.splits.values() for i in s.ids]
    texts = {key: ENGLISH[k % len(ENGLISH)] + f" , number {k}" for k, key in enumerate(ids)}
    csv_path = write_csv(tmp_path / "en.csv", list(texts.items()))
    out = tmp_path / "sims_en.npz"
    assert run_cli(["retokenize", str(short_sims), "--text-encoder", "minilm", "--texts",
                    str(csv_path), "--out", str(out)]) == 0
    after = load_feature_file(out)
    for split in after.splits.values():
        want = [texts[str(i)] for i in split.ids]
        own = minilm_tokenizer(want, max_length=39, truncation=True, padding="max_length")
        np.testing.assert_array_equal(split.text_bert[:, 0], own["input_ids"])
        assert list(split.raw_text) == want  # the texts the ids now come from
    config = api.build_config("clgsi", "sims", text_encoder="minilm")
    _, checked = load_encoder_and_data(config, out)
    assert check_vocabulary(checked, minilm_tokenizer, "minilm") == 1.0


def test_bad_texts_csv_and_bad_requests_are_one_error_line(short_sims, short_mosi, tmp_path,
                                                           capsys):
    features = load_feature_file(short_sims)
    ids = [str(i) for s in features.splits.values() for i in s.ids]
    rows = [(key, f"text {k}") for k, key in enumerate(ids)]
    out = tmp_path / "out.npz"
    cases = {
        "missing.csv": (rows[1:], "id,text", f"no text for id '{ids[0]}'"),
        "dup.csv": ([*rows, rows[3]], "id,text", f"duplicate id '{ids[3]}'"),
        "empty.csv": ([rows[0], (rows[1][0], "  "), *rows[2:]], "id,text",
                      f"empty text for id '{ids[1]}'"),
        "unknown.csv": ([*rows, ("nobody$_1", "hello")], "id,text", "id 'nobody$_1' is not in"),
        "columns.csv": (rows, "key,sentence", "expected columns 'id' and 'text'"),
    }
    for name, (content, header, needle) in cases.items():
        path = write_csv(tmp_path / name, content, header)
        fails(["retokenize", str(short_sims), "--text-encoder", "minilm", "--texts", str(path),
               "--out", str(out)], capsys, str(path), needle)
        assert not out.exists()
    fails(["retokenize", str(short_sims), "--text-encoder", "minilm", "--out", str(out)],
          capsys, "has no raw_text", "--texts")
    fails(["retokenize", str(short_mosi), "--text-encoder", "minilm", "--out", str(short_mosi)],
          capsys, "also an input")
    fails(["retokenize", str(short_mosi), "--text-encoder", "minilm", "--max-length", "2",
           "--out", str(out)], capsys, "--max-length")
    assert not out.exists()
    with pytest.raises(MsakitError, match="no rows"):
        read_texts_csv(write_csv(tmp_path / "none.csv", []))


def test_runconfig_records_the_new_fields():
    data = RunConfig(model_name="clgsi", dataset="mosi").to_dict()
    assert data["preset"] == "paper" and data["allow_vocab_mismatch"] is False
    assert data["sampler"] == "random" and data["seeds"] == list(DEFAULT_SEEDS)


def test_resume_reads_folders_written_before_presets_existed(tmp_path):
    from msakit.training.runs import _check_resume_config

    config = api.build_config("clgsi", "mosi", text_encoder="minilm")
    older = {k: v for k, v in config.to_dict().items()
             if k not in ("preset", "allow_vocab_mismatch")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older))
    _check_resume_config(tmp_path, config)  # the same run: accepted
    with pytest.raises(MsakitError, match="started with --preset paper, not authors"):
        _check_resume_config(tmp_path, api.build_config("clgsi", "mosi", preset="authors",
                                                        text_encoder="minilm"))
    with pytest.raises(MsakitError, match=r"other settings \(sampler\)"):
        _check_resume_config(tmp_path, api.build_config(
            "clgsi", "mosi", text_encoder="minilm", overrides=["sampler=bucket"]))
