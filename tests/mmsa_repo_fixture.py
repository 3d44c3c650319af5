"""What the tests against thuiar/MMSA's repository models (TETFN, CENET, ALMT) share: the golden
fixtures ``tests/fixtures/mmsa_repo/NAME.pt`` (written by ``make_fixtures.py`` there) and the
ways msakit reads them.

* :func:`load`: a fixture (``state``, ``inputs``, ``eval``, ``steps``, ``msakit``, ``tiny_bert``).
* :func:`build`: msakit's model of the fixture's widths holding its weights, through the spec's
  ``imports["mmsa"]`` and :func:`~msakit.models.import_weights.check_mapped`.
* :func:`batch_of`: a fixture batch (or some of its rows) as msakit's ``Batch``.
* :func:`cli_predictions`: ``msakit import-weights --from mmsa`` then ``msakit predict`` on the
  fixture's test batch written as an MMSA feature file.
* :func:`check_step`: one training step's loss and gradients against the fixture's.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from conftest import run_cli
from mmsa_reference_bert import assert_gradients_close

from msakit.data.batching import Batch
from msakit.encoders.text import text_encoder_from_config
from msakit.models.base import Dims, MSAModel
from msakit.models.import_weights import check_mapped
from msakit.models.registry import model_spec

FOLDER = Path(__file__).parent / "fixtures" / "mmsa_repo"


def load(name: str) -> dict[str, Any]:
    return torch.load(FOLDER / f"{name}.pt", weights_only=True)


def dims_of(fixture: dict[str, Any]) -> Dims:
    inputs = fixture["inputs"]["test"]
    return Dims(audio=inputs["audio"].shape[2], vision=inputs["vision"].shape[2],
                text_len=inputs["text"].shape[2], audio_len=inputs["audio"].shape[1],
                vision_len=inputs["vision"].shape[1])


def build(name: str, fixture: dict[str, Any], **settings: Any) -> MSAModel:
    """msakit's ``name`` with the fixture's ``msakit`` settings (and ``settings``), holding the
    fixture's weights imported by the spec's importer."""
    spec = model_spec(name)
    encoder = text_encoder_from_config({"model_type": "bert", **fixture["tiny_bert"]})
    config = spec.config(**fixture["msakit"], **settings)
    model = spec.build(config, dims_of(fixture), encoder)
    mapped = spec.imports["mmsa"](fixture["state"])
    model.load_state_dict(check_mapped(mapped, model, f"{name}.pt"))
    return model


def batch_of(values: dict[str, torch.Tensor], rows: Any = None) -> Batch:
    rows = slice(None) if rows is None else rows
    return Batch.from_dict({k: v[rows] for k, v in values.items()})


def check_step(model: MSAModel, loss: torch.Tensor, expected: dict[str, Any], convert) -> None:
    """``loss`` (backpropagated) equals the fixture step's to 1e-5 relative; every gradient
    the reference has is within 1e-5 of its tensor's largest entry (plus 1e-7 of the largest
    overall), and the parameters the reference gives no gradient get none (or zeros)."""
    torch.testing.assert_close(loss.detach().double(), expected["loss"], rtol=1e-5, atol=0)
    grads = {n: p.grad if p.grad is not None else torch.zeros_like(p)
             for n, p in model.named_parameters()}
    theirs = convert(expected["grads"])
    assert_gradients_close({n: grads[n] for n in theirs}, theirs)
    assert all(float(grads[n].abs().max()) == 0 for n in grads if n not in theirs)


def write_mmsa_file(fixture: dict[str, Any], path: Path) -> Path:
    """The fixture's batches as an MMSA feature file (train; valid and test: the test batch)."""
    def split(values: dict[str, torch.Tensor], name: str) -> dict:
        n = len(values["labels"])
        return {"text_bert": values["text"].numpy(), "audio": values["audio"].numpy(),
                "vision": values["vision"].numpy(),
                "audio_lengths": values["audio_lengths"].numpy(),
                "vision_lengths": values["vision_lengths"].numpy(),
                "regression_labels": values["labels"].numpy(),
                "id": np.array([f"{name}_{i}" for i in range(n)], dtype=object),
                "raw_text": np.array([f"clip {i}" for i in range(n)], dtype=object)}

    inputs = fixture["inputs"]
    data = {"train": split(inputs["train"], "train"), "valid": split(inputs["test"], "valid"),
            "test": split(inputs["test"], "test")}
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def cli_predictions(name: str, fixture: dict[str, Any], folder: Path) -> torch.Tensor:
    """``import-weights --from mmsa`` of the fixture's state dict, then ``predict`` on the test
    split: the predictions as a tensor (predict writes 6 significant digits)."""
    from transformers import BertConfig

    encoder = folder / "bert"
    BertConfig(**fixture["tiny_bert"]).save_pretrained(encoder)
    weights = folder / f"{name}-mosi.pth"
    torch.save(fixture["state"], weights)
    data = write_mmsa_file(fixture, folder / "mosi.pkl")
    sets = [x for k, v in fixture["msakit"].items() for x in ("--set", f"{k}={v}")]
    ckpt, out = folder / "imported.pt", folder / "p.csv"
    assert run_cli(["import-weights", "--from", "mmsa", "--model", name, "--dataset", "mosi",
                    "--weights", str(weights), "--data", str(data), "--text-encoder",
                    str(encoder), "--out", str(ckpt), *sets]) == 0
    assert run_cli(["predict", "--checkpoint", str(ckpt), "--data", str(data), "--split",
                    "test", "--out", str(out)]) == 0
    with open(out) as f:
        return torch.tensor([float(row["prediction"]) for row in csv.DictReader(f)])
