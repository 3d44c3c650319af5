"""The layers below the API (issue 20, item 2): run orchestration (``msakit.training.runs``)
takes a configuration, the data, an output folder and the run's options; checkpoint reading is
``msakit.training.checkpoints``; ``msakit.api`` is the facade over both, and its names stay
importable from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from msakit import api
from msakit.core.errors import MsakitError
from msakit.data.synthetic import write_synthetic
from msakit.training import checkpoints, runs
from msakit.training.runs import RunOptions, run_training

SMALL = ["text_hidden=8", "audio_hidden=4", "vision_hidden=4", "text_out=4",
         "post_fusion_dim=8"]
"""A TFN small enough for a test (it reads the file's text features: no text encoder)."""


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "mosi.pkl"
    return write_synthetic(str(path), "mosi", (12, 4, 4), seed=0, text_features=True,
                           frames={"audio": 12, "vision": 10})


@dataclasses.dataclass
class Recorder:
    """A tracker (:class:`msakit.training.runs.Tracker`) that keeps what it is given."""

    started: dict[str, Any]
    epochs: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    finished: list[tuple[list[dict[str, Any]], bool]] = dataclasses.field(default_factory=list)

    def seed_logger(self, seed: int):
        return lambda epoch, record: self.epochs.append((seed, epoch))

    def finish(self, rows, out, *, failed=False) -> None:
        self.finished.append((rows, failed))


def test_run_training_takes_a_config_the_data_an_output_and_options(features, tmp_path):
    """The orchestration's own entry point computes what ``msakit.train`` computes, and a
    tracker is an option: called on the main rank once the checks passed, given every epoch of
    every seed and the results table."""
    config = api.build_config("tfn", "mosi", seeds=[3], epochs=2, batch=6, overrides=SMALL)
    trackers: list[Recorder] = []

    def start(**given: Any) -> Recorder:
        trackers.append(Recorder(given))
        return trackers[-1]

    direct = run_training(config, features, tmp_path / "direct",
                          RunOptions(quiet=True, tracking=start))
    api.train("tfn", "mosi", features, seeds=[3], epochs=2, batch=6, overrides=SMALL,
              out=tmp_path / "facade", quiet=True)
    assert ((tmp_path / "direct" / "results.csv").read_text()
            == (tmp_path / "facade" / "results.csv").read_text())
    [tracker] = trackers
    assert tracker.started["out"] == tmp_path / "direct"
    saved = yaml.safe_load((tmp_path / "direct" / "config.yaml").read_text())
    assert tracker.started["config"]["data"] == saved["data"]  # the run's own configuration
    assert tracker.started["data"] == features
    assert tracker.epochs == [(3, 0), (3, 1)]
    assert tracker.finished == [(direct.rows, False)]


def test_run_options_are_checked_when_made():
    with pytest.raises(MsakitError, match="save='all': one of best, last, none"):
        RunOptions(save="all")
    with pytest.raises(MsakitError, match="--resume and --overwrite exclude each other"):
        RunOptions(resume=True, overwrite=True)
    # the facade checks its options before it builds a configuration (one line, no run)
    with pytest.raises(MsakitError, match="save='all'"):
        api.train("tfn", "mosi", "no-such-file.pkl", save="all", overrides=["nope=1"])


def test_the_api_keeps_the_layers_names():
    """Code written against ``msakit.api`` before the split still finds every name there."""
    for name in ("load_checkpoint", "LoadedCheckpoint", "resolve_checkpoint", "split_for",
                 "run_seed_checkpoints", "INFERENCE_BATCH", "BUILT_PER_STORED",
                 "UNSAVED_ELEMENTS", "UNSAVED_TENSORS"):
        assert getattr(api, name) is getattr(checkpoints, name), name
    for name in ("TrainResult", "SAVE_MODES", "horizon_note", "run_training", "RunOptions"):
        assert getattr(api, name) is getattr(runs, name), name
    assert set(api.__all__) <= set(dir(api))
