"""Errors in the order a user can act on them: every declared file argument is checked before a
model, an encoder or data loads; a hub name with no network fails at once, in one line, without
the hub client's retries; Python warnings reach the user as one ``warning:`` line each."""

from __future__ import annotations

import warnings

import pytest
from conftest import run_cli

from msakit.core.errors import MsakitError
from msakit.core.guard import run_guarded
from msakit.encoders import text


def test_a_missing_data_file_is_named_before_the_encoder_loads(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the text encoder was loaded before --data was checked")

    monkeypatch.setattr(text, "load_text_encoder", never)
    missing = tmp_path / "nope.npz"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(missing),
                    "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --data {missing} does not exist (no such file or folder)"]
    assert not (tmp_path / "run").exists()


def test_a_hub_name_without_network_fails_at_once(monkeypatch):
    """No retries: the hub client is never asked when one connection to the endpoint fails."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(text, "_hub_reachable", lambda timeout=5.0: False)
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("transformers was asked to download")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", never)
    with pytest.raises(MsakitError) as caught:
        text.load_text_encoder("bert-base-uncased")
    message = str(caught.value)
    assert "cannot be reached" in message and "--text-encoder DIR" in message
    assert "minilm" in message and "\n" not in message


def test_a_cached_hub_name_loads_from_the_cache_when_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(text, "_hub_reachable", lambda timeout=5.0: False)
    monkeypatch.setattr(text, "_cached", lambda source: True)
    assert text.hub_settings("bert-base-uncased") == {"local_files_only": True}
    monkeypatch.setattr(text, "_hub_reachable", lambda timeout=5.0: True)
    assert text.hub_settings("bert-base-uncased") == {}
    assert text.hub_settings("./a/folder") == {}  # folders never touch the hub


def test_warnings_are_one_line_each(capsys):
    def noisy() -> int:
        import numpy as np

        np.mean(np.array([]))  # NumPy: "Mean of empty slice", twice with the division
        np.mean(np.array([]))
        warnings.warn("Detected pickle protocol 4 in the checkpoint", UserWarning, stacklevel=1)
        return 0

    assert run_guarded(noisy) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("warning: ") for line in err), err
    assert "warning: Mean of empty slice" in err
    assert len(err) == len(set(err))  # once per message
    assert not any("pickle protocol" in line for line in err)


def test_epochs_caps_a_model_that_trains_until_early_stopping():
    """MISA's preset trains past its epochs until early stopping (MMSA's rule) and says so at
    start; a user's --epochs caps it."""
    from msakit.api import build_config, horizon_note

    preset = build_config("misa", "mosi")
    assert not preset.stop_at_horizon
    assert "until early stopping" in horizon_note(preset) and "--epochs" in horizon_note(preset)
    capped = build_config("misa", "mosi", epochs=2)
    assert capped.epochs == 2 and capped.stop_at_horizon and horizon_note(capped) is None
    again = build_config("misa", "mosi", epochs=2, overrides=["stop_at_horizon=false"])
    assert not again.stop_at_horizon  # --set still decides last
