"""``msakit train --init-from``: ConKI's Table 6 route (train on MOSEI, fine-tune on MOSI).

A CLGSI run on a MOSEI-shaped file (audio/vision 74/35 wide), then a run on a MOSI-shaped file
(5/20) from its checkpoint: every tensor whose shape fits starts equal to the checkpoint's, the
input-width ones start as a fresh run's of the same seed, and the note lists exactly those.
"""

from __future__ import annotations

import pytest
import torch
from conftest import best_checkpoint, run_cli, write_short_synthetic

from msakit import api
from msakit.core.errors import MsakitError
from msakit.training.trainer import Trainer

FRAMES = {"audio": 30, "vision": 20}
MOSI_WIDTHS = ["common_dim=64", "specific_dim=64", "head_dim=128"]
"""CLGSI's MOSI widths (its MOSEI preset is wider): then only input-width tensors differ."""
INPUT_WIDTH_MODULES = ("audio_encoder.", "vision_encoder.", "project_audio.", "project_vision.",
                       "subnet_audio.", "subnet_vision.")


@pytest.fixture(scope="module")
def mosei_run(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("init_from")
    mosei = write_short_synthetic(root / "mosei.pkl", "mosei", (16, 6, 6), FRAMES, seed=1)
    mosi = write_short_synthetic(root / "mosi.pkl", "mosi", (16, 6, 6), FRAMES, seed=2)
    run = root / "mosei_run"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosei", "--data", str(mosei),
                    "--text-encoder", str(tiny_bert), "--seeds", "7", "--epochs", "1",
                    "--batch", "8", "--out", str(run), "--quiet",
                    *[x for s in MOSI_WIDTHS for x in ("--set", s)]]) == 0
    return root, run / "seed-7" / "model.safetensors", mosi


def _start_states(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Record the model's weights when each seed's training starts."""
    starts: list[dict[str, torch.Tensor]] = []
    fit = Trainer.fit

    def recording_fit(self):
        starts.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    return starts


def test_init_from_takes_fitting_tensors_and_reinitialises_the_others(
        mosei_run, tiny_bert, monkeypatch, capsys):
    root, ckpt, mosi = mosei_run
    starts = _start_states(monkeypatch)
    common = ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(mosi),
              "--text-encoder", str(tiny_bert), "--seeds", "7", "--epochs", "1",
              "--batch", "8"]
    assert run_cli([*common, "--out", str(root / "fresh"), "--quiet"]) == 0
    capsys.readouterr()
    assert run_cli([*common, "--out", str(root / "tuned"), "--init-from", str(ckpt)]) == 0
    err = capsys.readouterr().err
    fresh, tuned = starts
    trained = best_checkpoint(ckpt.parent)["model"]
    differ = sorted(k for k in tuned if trained[k].shape != tuned[k].shape)
    # Only what reads the audio/vision widths (CLGSI's Transformers run on the raw widths).
    assert differ and all(k.startswith(INPUT_WIDTH_MODULES) for k in differ)
    assert any(k.startswith("project_vision.") for k in differ)
    for key, value in tuned.items():
        expected = fresh[key] if key in differ else trained[key]
        assert torch.equal(value, expected), key
    # The fitting tensors really come from the checkpoint (not what a fresh run starts with).
    assert not torch.equal(trained["head.net.1.weight"], fresh["head.net.1.weight"])
    listed = [line.split(":")[0].strip() for line in err.splitlines() if line.startswith("  ")]
    assert sorted(listed) == differ
    assert f"{len(tuned) - len(differ)} of {len(tuned)} tensors start from it" in err
    saved = (root / "tuned" / "config.yaml").read_text()
    assert f"init_from: {ckpt}" in saved


def test_init_from_refuses_another_model_in_one_line(mosei_run, tiny_bert):
    root, ckpt, mosi = mosei_run
    with pytest.raises(MsakitError, match="a clgsi checkpoint; the run trains conki"):
        api.train("conki", "mosi", mosi, text_encoder=str(tiny_bert), seeds=[1], epochs=1,
                  out=root / "conki", init_from=ckpt, quiet=True)
    assert not (root / "conki").exists()
    with pytest.raises(MsakitError, match="do not fit this run's model .has extra subnet_audio"):
        api.train("clgsi", "mosi", mosi, text_encoder=str(tiny_bert), seeds=[1], epochs=1,
                  out=root / "other", init_from=ckpt, quiet=True,
                  overrides=["use_specific=false"])
    assert not (root / "other").exists()
