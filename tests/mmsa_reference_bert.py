"""What the BERT-based MMSA equivalence tests (MISA, Self-MM) share: MMSA's own config, data loader
and a tiny BERT.

* :func:`make_bert_768`: a 1-layer random BERT of width 768 (MMSA's BERT models assume 768)
  with a small vocabulary, plus the ``vocab.txt`` MMSA's ``BertTextEncoder`` loads a tokenizer
  from; saved to a folder that both MMSA (``pretrained``) and msakit (``--text-encoder``) read.
* :func:`write_mmsa_file`: a synthetic MMSA pickle that MMSA's ``MMDataset`` can read: token ids
  folded into the small vocabulary, ``raw_text`` present, no zero audio/vision length (MMSA's
  packed LSTMs cannot take one).
* :func:`mmsa_args`: MMSA's ``get_config_regression`` for (model, dataset), pointed at those.
* :func:`mmsa_split`: MMSA's ``MMDataset`` of a split, and :func:`mmsa_batch` the batch of given
  sample indices as MMSA's DataLoader collates it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

VOCAB = 512
"""Token ids of the test files are folded into [0, VOCAB); 101/102 ([CLS]/[SEP]) stay."""


def make_bert_768(folder: Path) -> Path:
    """A random 1-layer BertModel, hidden 768 (12 heads), vocabulary VOCAB, and its vocab.txt."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=64, max_position_embeddings=64,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(folder)
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    words = [special.get(i, f"w{i}") for i in range(VOCAB)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


def write_mmsa_file(path: Path, like: str, n: tuple[int, int, int], *,
                    frames: dict[str, int], seed: int = 0) -> Path:
    """A synthetic ``like``-shaped MMSA pickle (see the module docstring) at ``path``."""
    from msakit.data.synthetic import write_synthetic

    write_synthetic(str(path), like, tuple(n), seed=seed, frames=frames)
    with open(path, "rb") as f:
        data = pickle.load(f)
    for split in data.values():
        ids = split["text_bert"][:, 0]
        split["text_bert"][:, 0] = np.where(ids < 103, ids, 103 + ids % (VOCAB - 103))
        split["raw_text"] = np.array([f"clip {i}" for i in range(len(ids))], dtype=object)
        for key in ("audio_lengths", "vision_lengths"):
            split[key] = [max(1, int(x)) for x in split[key]]
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def mmsa_files(root: Path, frames: dict[str, int]) -> dict[str, Path]:
    """{"bert": a 768-wide BERT folder, "data": a 10/6/4-sample MOSI-shaped file} in ``root``."""
    return {"bert": make_bert_768(root / "bert"),
            "data": write_mmsa_file(root / "mosi.pkl", "mosi", (10, 6, 4), frames=frames)}


def share_weights(reference, ours, convert, *, dropout: float | None = None) -> None:
    """Load MMSA's weights into msakit's model through ``convert`` (the spec's
    ``imports["mmsa"]``); with ``dropout``, set every dropout of both to it."""
    from msakit.training.trainer import set_dropout

    ours.load_state_dict(convert(reference.state_dict()))
    if dropout is not None:
        set_dropout(reference, dropout)
        set_dropout(ours, dropout)


def mmsa_args(model: str, dataset: str, *, data: Path, bert: Path, **overrides: Any):
    """MMSA's regression config of (model, dataset) for ``data`` and the BERT folder ``bert``."""
    from MMSA.config import get_config_regression

    with open(data, "rb") as f:
        train = pickle.load(f)["train"]
    args = get_config_regression(model, dataset)
    args.update(
        featurePath=str(data), pretrained=str(bert), custom_feature=None, feature_T=None,
        feature_A=None, feature_V=None, train_mode="regression", device="cpu",
        feature_dims=[768, train["audio"].shape[2], train["vision"].shape[2]],
        train_samples=len(train["regression_labels"]), **overrides,
    )
    return args


def mmsa_split(args, split: str):
    """MMSA's ``MMDataset`` of ``split`` (it reads the file named by ``args.featurePath``)."""
    from MMSA.data_loader import MMDataset

    return MMDataset(args, mode=split)


def mmsa_batch(dataset, indices) -> dict[str, Any]:
    """The samples ``indices`` of an MMSA dataset, collated as MMSA's DataLoader does."""
    from torch.utils.data import default_collate

    return default_collate([dataset[int(i)] for i in indices])


def assert_gradients_close(ours: dict[str, Any], reference: dict[str, Any]) -> None:
    """Every gradient within 1e-5 of its tensor's largest entry; entries that are zero in exact
    arithmetic (e.g. attention key biases) within 1e-7 of the largest gradient overall."""
    assert set(ours) == set(reference)
    floor = 1e-7 * max(float(g.abs().max()) for g in reference.values())
    for name, grad in reference.items():
        error = float((ours[name] - grad).abs().max())
        assert error <= 1e-5 * float(grad.abs().max()) + floor, (name, error)
