"""``msakit import-weights --from mmsa``: a state dict saved from MMSA's AMIO becomes an msakit
checkpoint whose ``msakit predict`` gives MMSA's predictions on a whole split."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import run_cli
from mmsa_reference import mmsa_args, mmsa_batch, write_mmsa_file

# (MMSA's overrides of its MOSI configuration, the same widths as msakit --set values)
MODELS = {
    "tfn": ({"hidden_dims": [16, 6, 10], "text_out": 7, "post_fusion_dim": 12},
            ["text_hidden=16", "audio_hidden=6", "vision_hidden=10", "text_out=7",
             "post_fusion_dim=12"]),
    "lmf": ({"hidden_dims": [12, 6, 10], "rank": 2},
            ["text_hidden=12", "audio_hidden=6", "vision_hidden=10", "rank=2"]),
    "mult": ({"dst_feature_dim_nheads": [8, 2], "nlevels": 2}, ["dim=8", "heads=2", "layers=2"]),
    "lf_dnn": ({"hidden_dims": [12, 6, 10], "text_out": 7, "post_fusion_dim": 9},
               ["text_hidden=12", "audio_hidden=6", "vision_hidden=10", "text_out=7",
                "post_fusion_dim=9"]),
    "ef_lstm": ({"hidden_dims": 8, "num_layers": 2}, ["hidden=8", "layers=2"]),
    "mfn": ({"hidden_dims": [6, 4, 5], "memsize": 7},
            ["text_hidden=6", "audio_hidden=4", "vision_hidden=5", "memory=7"]),
}
TEST = 6


@pytest.fixture(scope="module")
def mosi(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_import")
    return write_mmsa_file(root / "mosi.pkl", "mosi", (8, 4, TEST), {"audio": 24, "vision": 18})


def saved_reference(model: str, path, folder):
    """MMSA's AMIO (random weights) saved as MMSA saves it, and its test-split predictions."""
    from MMSA.models import AMIO

    args = mmsa_args(model, "mosi", path, **MODELS[model][0])
    batch = mmsa_batch(args, "test", list(range(TEST)))
    torch.manual_seed(1)
    reference = AMIO(args).eval()
    weights = folder / f"{model}-mosi.pth"
    torch.save(reference.state_dict(), weights)
    with torch.no_grad():
        expected = reference(batch["text"], batch["audio"], batch["vision"])["M"].view(-1)
    return weights, expected


def import_argv(model, weights, data, out, *extra):
    sets = [x for s in MODELS[model][1] for x in ("--set", s)]
    return ["import-weights", "--from", "mmsa", "--model", model, "--dataset", "mosi",
            "--weights", str(weights), "--data", str(data), "--out", str(out), *sets, *extra]


@pytest.mark.parametrize("model", MODELS)
def test_predict_gives_mmsas_predictions(model, mosi, tmp_path, capsys):
    weights, expected = saved_reference(model, mosi, tmp_path)
    ckpt, preds = tmp_path / "imported.pt", tmp_path / "p.csv"
    assert run_cli(import_argv(model, weights, mosi, ckpt)) == 0
    assert "weights from mmsa" in capsys.readouterr().out
    assert run_cli(["predict", "--checkpoint", str(ckpt), "--data", str(mosi), "--split",
                    "test", "--out", str(preds)]) == 0
    with open(preds) as f:
        got = torch.tensor([float(row["prediction"]) for row in csv.DictReader(f)])
    # predict writes 6 significant digits
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()
    state = torch.load(ckpt, weights_only=True)
    assert state["imported_from"]["source"] == "mmsa" and state["text_encoder_config"] == {}
    assert state["config"]["optimizer"] == "adam"  # MMSA's training settings came along


def test_refusals_are_one_line(mosi, tmp_path, capsys):
    weights, _ = saved_reference("lmf", mosi, tmp_path)
    cases = [
        (import_argv("tfn", weights, mosi, tmp_path / "a.pt"),
         "not MMSA's TFN weights: unexpected keys Model.audio_factor"),
        (import_argv("lmf", weights, mosi, tmp_path / "b.pt", "--text-encoder", "minilm"),
         "reads the file's precomputed text features"),
        (import_argv("lmf", weights, mosi, tmp_path / "c.pt", "--set", "rank=3"),
         "shapes differ audio_factor is 2x7x1, the configuration needs 3x7x1"),
        (["import-weights", "--from", "mmsa", "--model", "clgsi", "--dataset", "mosi",
          "--weights", str(weights), "--data", str(mosi), "--out", str(tmp_path / "d.pt")],
         "weights, not clgsi"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert run_cli(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err, err
    assert not list(tmp_path.glob("*.pt"))


def test_training_a_features_model_needs_the_text_key(mosi_file, tmp_path, capsys):
    """A file without precomputed text features (here: no 'text' key) is refused by name."""
    argv = ["train", "--model", "tfn", "--dataset", "mosi", "--data", str(mosi_file),
            "--out", str(tmp_path / "run"), "--seeds", "1", "--epochs", "1"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "key 'text': required key is missing" in err
    assert not (tmp_path / "run").exists()
