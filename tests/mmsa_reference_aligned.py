"""Synthetic MMSA files for the models MMSA trains on aligned data (``need_data_aligned``:
BERT-MAG, MFM, MCTN), readable by MMSA's ``MMDataset`` and by msakit's loader.

* :func:`write_file`: a MOSI/SIMS-shaped pickle with precomputed ``text`` features, BERT token
  ids folded into :data:`mmsa_reference_bert.VOCAB`, ``raw_text``; with ``aligned=True`` it is
  an aligned file as MMSA's ``aligned_50.pkl``: one audio and one vision frame per token
  position (frames past the token count zero) and no ``audio_lengths`` / ``vision_lengths``.
* :func:`mmsa_args`: MMSA's ``get_config_regression`` of (model, dataset) for such a file,
  with the ``seq_lens`` MMSA's run derives from the data (its AlignSubNet reads them).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from mmsa_reference_bert import VOCAB


def write_file(path: Path, like: str, n: tuple[int, int, int], *, frames: dict[str, int],
               aligned: bool, seed: int = 0) -> Path:
    """The file described in the module docstring; ``frames`` cuts an unaligned file's
    audio/vision (ignored when ``aligned``)."""
    from msakit.data.synthetic import make_synthetic

    data = make_synthetic(like, *n, seed=seed, text_features=True)
    for split in data.values():
        ids = split["text_bert"][:, 0]
        split["text_bert"][:, 0] = np.where(ids < 103, ids, 103 + ids % (VOCAB - 103))
        split["raw_text"] = np.array([f"clip {i}" for i in range(len(ids))], dtype=object)
        tokens = split["text_bert"][:, 1].sum(axis=1).astype(int)
        for m in ("audio", "vision"):
            if aligned:
                length = split["text_bert"].shape[2]
                x = np.zeros((len(ids), length, split[m].shape[2]), dtype=np.float32)
                x[:, :min(length, split[m].shape[1])] = split[m][:, :length]
                x[np.arange(length)[None, :] >= tokens[:, None]] = 0.0
                split[m] = x
                del split[f"{m}_lengths"]
            else:
                count = frames[m]
                split[m] = split[m][:, :count]
                split[f"{m}_lengths"] = [max(1, min(int(x), count))
                                         for x in split[f"{m}_lengths"]]
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def mmsa_args(model: str, dataset: str, *, data: Path, bert: Path | None = None,
              **overrides: Any):
    """MMSA's regression config of (model, dataset) pointed at ``data`` (and a BERT folder)."""
    from MMSA.config import get_config_regression

    with open(data, "rb") as f:
        train = pickle.load(f)["train"]
    args = get_config_regression(model, dataset)
    text_width = train["text"].shape[2]
    args.update(
        featurePath=str(data), custom_feature=None, feature_T=None, feature_A=None,
        feature_V=None, train_mode="regression", device="cpu",
        feature_dims=[text_width, train["audio"].shape[2], train["vision"].shape[2]],
        seq_lens=[train["text_bert"].shape[2], train["audio"].shape[1],
                  train["vision"].shape[1]],
        train_samples=len(train["regression_labels"]), **overrides,
    )
    if bert is not None:
        args.update(pretrained=str(bert))
    return args


def import_through_cli(reference, model: str, *, data: Path, folder: Path, sets: dict,
                       extra: tuple[str, ...] = ()):
    """MMSA's AMIO saved as MMSA saves it (``torch.save(state_dict())``), turned into an msakit
    checkpoint by ``msakit import-weights --from mmsa`` with ``--set`` ``sets``; returns the
    checkpoint's model in eval mode."""
    import torch
    from conftest import run_cli

    from msakit import api

    weights, checkpoint = folder / f"{model}.pth", folder / f"{model}.pt"
    torch.save(reference.state_dict(), weights)
    argv = ["import-weights", "--from", "mmsa", "--model", model, "--dataset", "mosi",
            "--weights", str(weights), "--data", str(data), "--out", str(checkpoint), *extra]
    argv += [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    assert run_cli(argv) == 0
    return api.load_checkpoint(checkpoint).model.eval()
