"""Helpers for the equivalence tests against MMSA (the ``mmsa`` package, a test dependency).

The same synthetic MMSA pickle feeds MMSA's own data set class (``MMSA.data_loader.MMDataset``,
which applies MMSA's per-model data steps such as ``need_normalized``) and msakit's loader; the
same samples form one batch on each side.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_mmsa_file(path: Path, like: str, n: tuple[int, int, int],
                    frames: dict[str, int] | None = None) -> Path:
    """A synthetic pickle with precomputed ``text`` features and the ``raw_text`` MMSA reads."""
    from msakit.data.synthetic import make_synthetic

    data = make_synthetic(like, *n, seed=0, text_features=True)
    for split in data.values():
        for m, count in (frames or {}).items():
            split[m] = split[m][:, :count]
            split[f"{m}_lengths"] = [min(int(x), count) for x in split[f"{m}_lengths"]]
        split["raw_text"] = np.array([f"clip {i}" for i in range(len(split["id"]))],
                                     dtype=object)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def write_aligned_mmsa_file(path: Path, like: str, n: tuple[int, int, int]) -> Path:
    """An aligned file like MMSA's ``aligned_50.pkl``: one audio and one vision frame per
    token (the first Lt frames of a synthetic file) and no ``audio_lengths``/``vision_lengths``
    (MMSA's loader ignores them for aligned data; msakit takes the text mask's lengths)."""
    write_mmsa_file(path, like, n)
    with open(path, "rb") as f:
        data = pickle.load(f)
    for split in data.values():
        length = split["text_bert"].shape[2]
        for m in ("audio", "vision"):
            split[m] = split[m][:, :length]
            del split[f"{m}_lengths"]
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def mmsa_args(model: str, dataset: str, path: Path, **overrides: Any):
    """MMSA's configuration of ``model`` on ``dataset`` (config_regression.json) for ``path``."""
    from MMSA.config import get_config_regression

    args = get_config_regression(model, dataset)
    args.update(
        featurePath=str(path), custom_feature=None, feature_T=None, feature_A=None,
        feature_V=None, train_mode="regression", device=torch.device("cpu"),
    )
    args.update(overrides)
    return args


def mmsa_batch(args, split: str, indices: list[int]) -> dict[str, Any]:
    """MMSA's batch of samples ``indices`` of ``split`` (its Dataset, its collation).

    Also sets ``args.feature_dims`` from the file, as MMSA's loader does."""
    from MMSA.data_loader import MMDataset
    from torch.utils.data import default_collate

    dataset = MMDataset(args, mode=split)
    if "seq_lens" in args:
        args["seq_lens"] = dataset.get_seq_len()
    return default_collate([dataset[i] for i in indices])


def msakit_batch(path: Path, split: str, indices: list[int], trim: bool
                 ) -> dict[str, torch.Tensor]:
    """msakit's batch of the same samples (text features loaded)."""
    from msakit.data.batching import collate
    from msakit.data.mmsa import load_feature_file

    features = load_feature_file(path, text_features=True)
    return collate(features.splits[split], np.asarray(indices), trim=trim)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every state entry's gradient by name; buffers and frozen parameters keep their value (so
    an importer's checks of fixed entries pass on the gradients too)."""
    params = dict(model.named_parameters())
    out = {}
    for name, value in model.state_dict().items():
        p = params.get(name)
        out[name] = p.grad if p is not None and p.grad is not None else value
    return out


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float, what: str) -> None:
    """|ours - theirs| <= rtol * max|theirs| (+ a float32 floor), elementwise."""
    scale = float(theirs.abs().max()) if theirs.numel() else 0.0
    worst = float((ours - theirs).abs().max()) if theirs.numel() else 0.0
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    assert worst <= rtol * scale + 1e-7, f"{what}: max diff {worst:.3g}, scale {scale:.3g}"


def compare_grads(ours: torch.nn.Module, mapped: dict[str, torch.Tensor], rtol: float) -> int:
    """Compare every trainable msakit parameter's gradient with MMSA's (mapped to msakit's
    names); returns how many were compared."""
    count = 0
    for name, p in ours.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{name}: no gradient in msakit's model"
        assert_close(p.grad, mapped[name], rtol, f"gradient of {name}")
        count += 1
    return count


def build_pair(model: str, dataset: str, path: Path, *, indices: list[int], build, importer,
               overrides: dict[str, Any], state_of=None):
    """(MMSA's AMIO of ``model``, msakit's model with its weights, MMSA's batch, msakit's batch)
    over the same samples; ``build(args, dims)`` makes msakit's model from MMSA's args;
    ``state_of(reference)`` gives the weights to import (default: its ``state_dict()``)."""
    from MMSA.models import AMIO

    from msakit.models.base import Dims
    from msakit.models.import_weights import check_mapped

    args = mmsa_args(model, dataset, path, **overrides)
    theirs = mmsa_batch(args, "train", indices)  # sets args.feature_dims from the file
    torch.manual_seed(0)
    reference = AMIO(args)
    text, audio, vision = args.feature_dims
    ours = build(args, Dims(audio=audio, vision=vision, text_dim=text))
    state = reference.state_dict() if state_of is None else state_of(reference)
    ours.load_state_dict(check_mapped(importer(state), ours, "test"))
    return reference, ours, theirs, msakit_batch(path, "train", indices, trim=False)


def check_predictions(pair) -> None:
    """Eval-mode predictions of both sides agree to 1e-4 (and tell the samples apart)."""
    reference, ours, theirs, batch = pair
    reference.eval(), ours.eval()
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])["M"].view(-1)
        got = ours(batch).prediction
    assert got.shape == expected.shape == (len(batch.labels),)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert expected.std() > 0


def check_training_step(pair, importer) -> int:
    """One training step of both sides (MMSA's trainers: ``L1Loss`` on the batch) gives the
    same loss and gradients to 1e-5 relative; returns how many gradients were compared."""
    reference, ours, theirs, batch = pair
    reference.train(), ours.train()
    output = reference(theirs["text"], theirs["audio"], theirs["vision"])["M"]
    expected = torch.nn.L1Loss()(output, theirs["labels"]["M"].view(-1, 1))
    expected.backward()
    loss = ours.compute_loss(ours(batch), batch).loss
    loss.backward()
    assert_close(loss.detach(), expected.detach(), 1e-5, "loss")
    return compare_grads(ours, importer(grads(reference)), 1e-5)



def check_multitask_step(pair, importer, path: Path, weights: dict[str, float]) -> int:
    """One training step of both sides as MMSA's multi-task trainers take it (the L1 of the
    fusion and unimodal outputs weighted by ``weights``, MMSA's ``args.M/T/A/V``, on the file's
    unimodal labels; msakit's model holds the training split's labels) gives the same loss and
    gradients to 1e-5 relative; returns how many gradients were compared."""
    from msakit.data.mmsa import load_feature_file

    reference, ours, theirs, batch = pair
    reference.train(), ours.train()
    outputs = reference(theirs["text"], theirs["audio"], theirs["vision"])
    expected = sum(weights[m] * torch.nn.L1Loss()(outputs[m], theirs["labels"][m].view(-1, 1))
                   for m in "MTAV")
    expected.backward()
    ours.on_train_start(load_feature_file(path, text_features=True).splits["train"])
    loss = ours.compute_loss(ours(batch), batch).loss
    loss.backward()
    assert_close(loss.detach(), expected.detach(), 1e-5, "loss")
    return compare_grads(ours, importer(grads(reference)), 1e-5)


def cli_import_predictions(model: str, dataset: str, path: Path, folder: Path, *,
                           overrides: dict[str, Any], sets: list[str], state_of=None):
    """MMSA's AMIO (random weights) saved as MMSA saves it (or as ``state_of(amio)`` gives),
    imported with ``msakit import-weights --from mmsa`` (``--set`` each of ``sets``) and run by
    ``msakit predict`` on the test split: (msakit's predictions, MMSA's) as tensors."""
    import csv

    from conftest import run_cli
    from MMSA.models import AMIO

    args = mmsa_args(model, dataset, path, **overrides)
    batch = mmsa_batch(args, "test", [0, 1, 2, 3])
    torch.manual_seed(3)
    reference = AMIO(args).eval()
    with torch.no_grad():
        expected = reference(batch["text"], batch["audio"], batch["vision"])["M"].view(-1)
    torch.save(reference.state_dict() if state_of is None else state_of(reference),
               folder / "weights.pth")
    argv = ["import-weights", "--from", "mmsa", "--model", model, "--dataset", dataset,
            "--data", str(path), "--weights", str(folder / "weights.pth"), "--out",
            str(folder / "imported.pt"), *[x for s in sets for x in ("--set", s)]]
    assert run_cli(argv) == 0
    assert run_cli(["predict", "--checkpoint", str(folder / "imported.pt"), "--data", str(path),
                    "--split", "test", "--out", str(folder / "p.csv")]) == 0
    with open(folder / "p.csv") as f:
        got = torch.tensor([float(row["prediction"]) for row in csv.DictReader(f)])
    return got, expected
