"""The run setting ``standardize``: per-feature statistics of the training split (valid frames
only), applied to every batch a model sees and carried in its checkpoints; off by default."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import best_checkpoint, run_cli

import msakit
from msakit import api
from msakit.config import RunConfig, apply_overrides
from msakit.core.errors import MsakitError
from msakit.data import standardize
from msakit.data.batching import Batch
from msakit.data.mmsa import load_feature_file
from msakit.data.safe_format import save_npz
from msakit.data.standardize import feature_stats, moments
from msakit.data.synthetic import make_synthetic
from msakit.encoders.text import load_text_encoder
from msakit.models.base import STANDARDIZER, Dims, FeatureStandardizer
from msakit.training.inputs import build_model
from msakit.training.trainer import TrainerHooks, evaluate_model

SMALL = ["feedforward=32", "common_dim=16", "specific_dim=16", "head_dim=16"]
# Features in wildly different units, as extracted descriptors are (Hz in the thousands beside
# values below 1): every audio/vision dimension gets its own scale and offset.
FRAMES = {"audio": 12, "vision": 10}


def _scaled_file(path, seed: int = 0):
    data = make_synthetic("mosi", 24, 8, 8, seed=seed)
    rng = np.random.default_rng(seed)
    for key in ("audio", "vision"):
        width = data["train"][key].shape[2]
        scale = 10.0 ** rng.uniform(-2, 3.5, width)
        offset = rng.uniform(0, 4000, width) * (rng.random(width) < 0.5)
        for split in data.values():
            split[key] = split[key][:, :FRAMES[key]]
            split[f"{key}_lengths"] = np.minimum(split[f"{key}_lengths"], FRAMES[key])
            valid = np.arange(FRAMES[key])[None, :, None] < split[f"{key}_lengths"][:, None, None]
            split[key] = np.where(valid, split[key] * scale + offset, 0).astype(np.float32)
    save_npz(data, path)
    return path


@pytest.fixture(scope="module")
def scaled_npz(tmp_path_factory):
    return _scaled_file(tmp_path_factory.mktemp("std") / "scaled.npz")


@pytest.fixture(scope="module")
def run(scaled_npz, tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("std_run") / "run"
    api.train("clgsi", "mosi", scaled_npz, text_encoder=str(tiny_bert), seeds=[3], epochs=2,
              batch=8, out=out, quiet=True, overrides=[*SMALL, "standardize=true"])
    return out


# --------------------------------------------------------------------------- the statistics
def test_moments_by_hand_valid_frames_only():
    # sample 0: 2 valid frames, sample 1: 1; padded frames hold values that must not count
    arr = np.array([[[1, 5, 0], [3, 5, -np.inf], [100, 100, 100]],
                    [[5, 5, 2], [-7, -7, -7], [9, 9, 9]]], dtype=np.float32)
    lengths = np.array([2, 1])
    mean, std = moments(arr, lengths, zero_neg_inf=True)
    # dim 0: 1, 3, 5; dim 1: 5, 5, 5 (constant); dim 2: 0, 0 (-inf as 0), 2
    assert mean == pytest.approx([3.0, 5.0, 2 / 3])
    assert std == pytest.approx([math.sqrt(8 / 3), 0.0, math.sqrt(8 / 9)])
    scale = standardize.scale_of(mean, std)
    assert scale == pytest.approx([1 / math.sqrt(8 / 3), 0.0, 1 / math.sqrt(8 / 9)])
    assert moments(arr, np.array([0, 0]))[0].tolist() == [0.0, 0.0, 0.0]  # no valid frame


def test_tiny_deviation_maps_to_zero():
    mean = np.array([4000.0, 4000.0, 0.0, 1.0])
    std = np.array([1e-4, 1.0, 1e-13, 1e-3])
    assert standardize.scale_of(mean, std).tolist() == [0.0, 1.0, 0.0, 1000.0]


def test_streamed_statistics_of_a_mapped_file_equal_the_direct_ones(scaled_npz, monkeypatch):
    train = load_feature_file(scaled_npz).splits["train"]
    assert not train.audio.flags.writeable  # a read-only map of the file
    monkeypatch.setattr(standardize, "CHUNK_ELEMENTS", 1)  # one sample per chunk
    stats = feature_stats(train)
    for key in ("audio", "vision"):
        arr, lengths = np.asarray(getattr(train, key)), getattr(train, f"{key}_lengths")
        frames = np.concatenate([arr[i, :n] for i, n in enumerate(lengths)]).astype(np.float64)
        frames[np.isneginf(frames)] = 0  # MMSA's silence, as batches read it
        mean, std = frames.mean(axis=0), frames.std(axis=0)
        assert getattr(stats, f"{key}_mean") == pytest.approx(mean, rel=1e-12, abs=1e-9)
        expected = np.where(std > 1e-6 * np.abs(mean), 1 / np.where(std > 0, std, 1), 0)
        assert getattr(stats, f"{key}_scale") == pytest.approx(expected, rel=1e-9)
        assert np.isfinite(getattr(stats, f"{key}_scale")).all()
    assert stats.audio_mean.dtype == np.float64
    assert np.isneginf(np.asarray(train.audio)).any()  # the synthetic audio holds -inf


def test_padded_frames_are_untouched_and_valid_ones_standardised():
    module = FeatureStandardizer(2, 1)
    module.set_stats(standardize.FeatureStats(
        audio_mean=np.array([1.0, 2.0]), audio_scale=np.array([0.5, 0.0]),
        vision_mean=np.array([-1.0]), vision_scale=np.array([2.0])))
    audio = torch.tensor([[[3.0, 9.0], [7.0, 7.0], [4.0, -4.0]]])  # 1 valid frame of 3
    vision = torch.tensor([[[0.0], [5.0]]])  # 2 valid of 2
    batch = Batch.from_dict({
        "text": torch.zeros(1, 3, 1, dtype=torch.long), "audio": audio, "vision": vision,
        "audio_lengths": torch.tensor([1]), "vision_lengths": torch.tensor([2]),
        "labels": torch.tensor([0.5])})
    out = module(batch)
    assert out.audio.tolist() == [[[1.0, 0.0], [7.0, 7.0], [4.0, -4.0]]]
    assert out.vision.tolist() == [[[2.0], [12.0]]]
    assert out.labels is batch.labels and batch.audio is audio  # input not modified


# --------------------------------------------------------------------------- the setting
def test_off_by_default_adds_nothing(scaled_npz, tiny_bert):
    assert RunConfig("clgsi", "mosi").standardize is False
    config = api.build_config("clgsi", "mosi", text_encoder=str(tiny_bert), overrides=SMALL)
    features = load_feature_file(scaled_npz)
    dims = Dims.of(features)
    encoder = load_text_encoder(str(tiny_bert))
    torch.manual_seed(0)
    off = build_model(config, dims, encoder)
    assert not any(k.startswith(STANDARDIZER) for k in off.state_dict())
    assert not off._forward_pre_hooks
    # On, with the identity's statistics: the same initial weights and the same outputs.
    on_config = dataclasses.replace(config, standardize=True)
    identity = standardize.FeatureStats(np.zeros(dims.audio), np.ones(dims.audio),
                                        np.zeros(dims.vision), np.ones(dims.vision))
    torch.manual_seed(0)
    on = build_model(on_config, dims, encoder, stats=identity)
    extra = {k for k in on.state_dict() if k.startswith(f"{STANDARDIZER}.")}
    assert extra == {f"{STANDARDIZER}.{m}_{s}" for m in ("audio", "vision")
                     for s in ("mean", "scale")}
    assert all(torch.equal(v, on.state_dict()[k]) for k, v in off.state_dict().items())
    test = features.splits["test"]
    a = evaluate_model(off, test, dataset="mosi", batch_size=8).predictions
    b = evaluate_model(on, test, dataset="mosi", batch_size=8).predictions
    np.testing.assert_array_equal(a, b)


def test_the_setting_is_typed_and_recorded():
    config = apply_overrides(RunConfig("clgsi", "mosi"), ["standardize=true"])
    assert config.standardize is True and "standardize: true" in config.to_yaml()
    with pytest.raises(MsakitError, match="standardize=maybe: expected true or false"):
        apply_overrides(RunConfig("clgsi", "mosi"), ["standardize=maybe"])


def test_a_bad_value_is_one_error_line(scaled_npz, tiny_bert, tmp_path, capsys):
    capsys.readouterr()
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(scaled_npz),
                    "--text-encoder", str(tiny_bert), "--out", str(tmp_path / "r"),
                    "--set", "standardize=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --set standardize=2: expected true or false"]
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- trained runs
def test_the_checkpoint_carries_the_training_split_statistics(run, scaled_npz, tiny_bert,
                                                            capsys):
    from msakit.rerun import load_run_config

    ckpt = api.load_checkpoint(run)
    assert ckpt.config.standardize is True
    assert "standardize: true" in (run / "config.yaml").read_text()
    assert load_run_config(run).standardize is True  # train --config keeps it
    # --resume with the setting changed is refused, as for any run setting
    capsys.readouterr()
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(scaled_npz),
                    "--text-encoder", str(tiny_bert), "--seeds", "3", "--epochs", "2",
                    "--batch", "8", "--out", str(run), "--resume", "--quiet",
                    *(x for kv in SMALL for x in ("--set", kv))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "standardize" in err[0]
    stats = feature_stats(load_feature_file(scaled_npz).splits["train"])
    state = ckpt.model.state_dict()
    for name in ("audio_mean", "audio_scale", "vision_mean", "vision_scale"):
        np.testing.assert_allclose(state[f"{STANDARDIZER}.{name}"].numpy(),
                                   getattr(stats, name).astype(np.float32))


def test_predict_evaluate_and_arrays_agree_with_the_model_in_memory(run, scaled_npz, tiny_bert):
    features = load_feature_file(scaled_npz)
    test = features.splits["test"]
    ckpt = api.load_checkpoint(run)
    # In memory: a model built as training builds it, with the statistics of the file.
    torch.manual_seed(0)
    net = build_model(ckpt.config, ckpt.dims, load_text_encoder(
        str(tiny_bert)), stats=feature_stats(features.splits["train"]))
    weights = {k: v for k, v in ckpt.model.state_dict().items()
               if not k.startswith(f"{STANDARDIZER}.")}
    net.load_state_dict(weights, strict=False)
    memory = evaluate_model(net, test, dataset="mosi", batch_size=8)
    rows = msakit.predict(run, scaled_npz, "test")
    from_file = np.array([r["prediction"] for r in rows])
    np.testing.assert_allclose(from_file, memory.predictions, rtol=1e-5, atol=1e-6)
    arrays = {"text_bert": test.text_bert, "audio": np.asarray(test.audio),
              "vision": np.asarray(test.vision), "audio_lengths": test.audio_lengths,
              "vision_lengths": test.vision_lengths, "id": test.ids}
    from_arrays = np.array([r["prediction"] for r in msakit.predict(run, arrays)])
    np.testing.assert_allclose(from_arrays, memory.predictions, rtol=1e-5, atol=1e-6)
    metrics = msakit.evaluate(run, scaled_npz, "test")
    assert metrics["MAE"] == pytest.approx(memory.metrics["MAE"], rel=1e-5)
    # The statistics matter: without them the same weights predict otherwise.
    ckpt.model.feature_standardizer.set_stats(standardize.FeatureStats(
        np.zeros(ckpt.dims.audio), np.ones(ckpt.dims.audio), np.zeros(ckpt.dims.vision),
        np.ones(ckpt.dims.vision)))
    unstandardised = evaluate_model(ckpt.model, test, dataset="mosi", batch_size=8).predictions
    assert not np.allclose(unstandardised, memory.predictions, rtol=1e-3, atol=1e-4)


class _Stop(Exception):
    pass


def test_resume_continues_exactly(scaled_npz, tiny_bert, tmp_path):
    common = {"text_encoder": str(tiny_bert), "seeds": [4], "epochs": 3, "batch": 8,
              "quiet": True, "overrides": [*SMALL, "standardize=true", "early_stop=10"]}
    api.train("clgsi", "mosi", scaled_npz, out=tmp_path / "unbroken", **common)

    def stop_after_first(epoch, metrics):
        if epoch == 0:
            raise _Stop

    with pytest.raises(_Stop):
        api.train("clgsi", "mosi", scaled_npz, out=tmp_path / "broken",
                  hooks=TrainerHooks(on_epoch_end=stop_after_first), **common)
    assert not (tmp_path / "broken" / "results.csv").exists()
    api.train("clgsi", "mosi", scaled_npz, out=tmp_path / "broken", resume=True, **common)
    assert (tmp_path / "broken" / "results.csv").read_text() == (
        tmp_path / "unbroken" / "results.csv").read_text()
    a = best_checkpoint(tmp_path / "unbroken" / "seed-4")["model"]
    b = best_checkpoint(tmp_path / "broken" / "seed-4")["model"]
    assert a.keys() == b.keys() and any(k.startswith(STANDARDIZER) for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_and_import_weights_leave_the_statistics(run, scaled_npz, tiny_bert, tmp_path,
                                                           capsys):
    # A run without standardize starts from a standardised checkpoint, and the other way round
    # from an unstandardised one: the weights are taken, the statistics never.
    plain = api.train("clgsi", "mosi", scaled_npz, text_encoder=str(tiny_bert), seeds=[5],
                      epochs=1, batch=8, out=tmp_path / "plain", quiet=True, overrides=SMALL,
                      init_from=run / "seed-3")
    state = best_checkpoint(plain.out / "seed-5")["model"]
    assert not any(k.startswith(STANDARDIZER) for k in state)
    other = _scaled_file(tmp_path / "other.npz", seed=1)
    again = api.train("clgsi", "mosi", other, text_encoder=str(tiny_bert), seeds=[5], epochs=1,
                      batch=8, out=tmp_path / "again", quiet=True,
                      overrides=[*SMALL, "standardize=true"],
                      init_from=plain.out / "seed-5")
    state = best_checkpoint(again.out / "seed-5")["model"]
    own = feature_stats(load_feature_file(other).splits["train"])
    np.testing.assert_allclose(state[f"{STANDARDIZER}.audio_mean"].numpy(),
                               own.audio_mean.astype(np.float32))
    capsys.readouterr()
    assert run_cli(["import-weights", "--from", "clgsi-authors", "--model", "clgsi",
                    "--dataset", "mosi", "--weights",
                    str(plain.out / "seed-5" / "model.safetensors"),
                    "--data", str(scaled_npz), "--text-encoder", str(tiny_bert),
                    "--out", str(tmp_path / "imported.pt"), "--set", "standardize=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "standardize=true does not apply to import-weights" in err[0]
    assert not (tmp_path / "imported.pt").exists()


def test_predict_video_standardises_as_training_did(tiny_bert, tmp_path):
    for extra in ("av", "cv2", "opensmile", "skimage"):
        pytest.importorskip(extra)
    from test_extract import make_corpus

    from msakit.data.batching import collate

    clips = make_corpus(tmp_path / "corpus", n=6, bad=False)  # 2 train clips
    data, run = tmp_path / "features.npz", tmp_path / "run"
    assert run_cli(["extract", str(clips), "--out", str(data), "--quiet"]) == 0
    assert run_cli(["train", "--model", "misa", "--dataset", "custom", "--label-range", "-3", "3",
                    "--data", str(data), "--text-encoder", str(tiny_bert), "--epochs", "1",
                    "--seeds", "1", "--batch", "2", "--set", "standardize=true",
                    "--out", str(run), "--quiet"]) == 0
    best = run / "seed-1"
    ckpt = api.load_checkpoint(best)
    train = load_feature_file(data).splits["train"]
    stats = feature_stats(train)
    assert stats.audio_mean.max() > 100  # eGeMAPS's formants, in Hz
    np.testing.assert_allclose(ckpt.model.feature_standardizer.audio_mean.numpy(),
                               stats.audio_mean.astype(np.float32))
    with torch.no_grad():
        first = float(ckpt.model(collate(train, np.array([0]))).prediction.reshape(-1)[0])
    video = clips.parent / "videos" / "clip0.mp4"
    assert api.predict_video(best, video, "clip number 0").prediction == pytest.approx(
        first, abs=1e-4)
