"""MISA and Self-MM through the command line: registered with MMSA's presets, trained (with
MMSA's loop settings: Adam, accumulated gradients, clipping by value) and evaluated."""

from __future__ import annotations

import pytest
from conftest import run_cli

from msakit import api
from msakit.models.registry import model_names, preset

MODELS = ("misa", "self_mm")


@pytest.mark.parametrize("model", MODELS)
def test_presets_are_mmsa_config(model):
    config = preset(model, "mosei")
    assert model in model_names()
    assert config.optimizer == "adam" and config.schedule == "constant"
    assert config.early_stop == 8 and not config.stop_at_horizon
    if model == "misa":
        assert config.batch_size == 64 and config.accumulate == 2 and config.clip_value == 0.8
        assert config.model["sim_weight"] == 0.8 and config.model["dropout"] == 0.5
        assert set(config.lr.values()) == {1e-4} and set(config.weight_decay.values()) == {0.0}
    else:
        assert config.batch_size == 32 and config.accumulate == 4
        assert config.lr == {"text": 5e-5, "audio": 5e-3, "vision": 1e-4, "other": 1e-3}
        assert config.weight_decay == {"text": 1e-3, "audio": 0.0, "vision": 0.0, "other": 1e-2}
        assert preset(model, "sims").model["label_bound"] == 1.0


@pytest.mark.parametrize("model", MODELS)
def test_trains_and_evaluates_through_the_cli(model, small_mosi_npz, tiny_bert, tmp_path,
                                              capsys):
    out = tmp_path / model
    assert run_cli(["train", "--model", model, "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--seeds", "3",
                    "--out", str(out), "--set", "epochs=2", "--set", "stop_at_horizon=true",
                    "--set", "batch_size=4", "--quiet"]) == 0
    ckpt = api.load_checkpoint(out / "seed-3")
    assert type(ckpt.model).name == model and ckpt.config.optimizer == "adam"
    assert not any("labels" in k for k in ckpt.model.state_dict())
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-3"), "--data",
                    str(small_mosi_npz)]) == 0
    assert "MAE" in capsys.readouterr().out


def test_a_bad_choice_is_one_error_line(small_mosi_npz, tiny_bert, tmp_path, capsys):
    assert run_cli(["train", "--model", "misa", "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--out",
                    str(tmp_path / "o"), "--set", "similarity=dann"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "similarity" in err[0]


# MMSA's models on the file's precomputed text features: (data, --set widths that keep it tiny)
FEATURE_MODELS = {
    "lf_dnn": ("mosi", ["text_hidden=8", "text_out=6", "vision_hidden=8", "post_fusion_dim=8"]),
    "ef_lstm": ("aligned", ["hidden=8", "layers=2"]),
    "mfn": ("aligned", ["text_hidden=8", "vision_hidden=8", "memory=8", "gamma1_hidden=8"]),
    "graph_mfn": ("aligned", ["text_hidden=8", "vision_hidden=8", "memory=8", "inner=8"]),
    "mtfn": ("sims", ["text_hidden=8", "text_out=6", "vision_hidden=8", "audio_hidden=4"]),
    "mlmf": ("sims", ["text_hidden=8", "vision_hidden=8"]),
    "mlf_dnn": ("sims", ["text_hidden=8", "vision_hidden=8"]),
}


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    """Tiny MOSI (unaligned and word-aligned) and SIMS files with precomputed text features."""
    from mmsa_reference import write_aligned_mmsa_file, write_mmsa_file

    root = tmp_path_factory.mktemp("feature_models")
    frames = {"audio": 24, "vision": 18}
    return {"mosi": write_mmsa_file(root / "mosi.pkl", "mosi", (12, 4, 4), frames),
            "sims": write_mmsa_file(root / "sims.pkl", "sims", (12, 4, 4), frames),
            "aligned": write_aligned_mmsa_file(root / "aligned.pkl", "mosi", (12, 4, 4))}


@pytest.mark.parametrize("model", FEATURE_MODELS)
def test_mmsa_feature_models_train_through_the_cli(model, feature_files, tmp_path, capsys):
    data, sets = FEATURE_MODELS[model]
    out = tmp_path / model
    dataset = "sims" if data == "sims" else "mosi"
    assert run_cli(["train", "--model", model, "--dataset", dataset, "--data",
                    str(feature_files[data]), "--seeds", "3", "--out", str(out), "--set",
                    "epochs=1", "--set", "stop_at_horizon=true", "--set", "batch_size=6",
                    *[x for s in sets for x in ("--set", s)], "--quiet"]) == 0
    ckpt = api.load_checkpoint(out / "seed-3")
    assert type(ckpt.model).__name__.lower().replace("_", "") == model.replace("_", "")
    assert ckpt.config.optimizer == "adam" and ckpt.config.early_stop == 8
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-3"), "--data",
                    str(feature_files[data])]) == 0
    assert "MAE" in capsys.readouterr().out


def test_a_multitask_model_needs_unimodal_labels(feature_files, tmp_path, capsys):
    """MTFN on a SIMS file without regression_labels_T/A/V: one error line naming the key."""
    import pickle

    with open(feature_files["sims"], "rb") as f:
        data = pickle.load(f)
    for split in data.values():
        for m in "TAV":
            del split[f"regression_labels_{m}"]
    unlabelled = tmp_path / "sims_m_only.pkl"
    with open(unlabelled, "wb") as f:
        pickle.dump(data, f, protocol=4)
    assert run_cli(["train", "--model", "mtfn", "--dataset", "sims", "--data", str(unlabelled),
                    "--out", str(tmp_path / "o"), "--seeds", "1", "--set", "epochs=1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("error:") and "regression_labels_T" in err[0]
    assert not (tmp_path / "o").exists()
