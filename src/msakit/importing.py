"""``msakit import-weights``: a reference implementation's trained weights as an msakit checkpoint.

The checkpoint has the format of a ``best.pt`` written by training (``{"model": state_dict,
"config": ..., "dims": ..., "text_encoder_config": ...}``), with the configuration that
reproduces the reference's computation (for ``clgsi-authors``: the paper preset of the dataset
with :data:`msakit.models.clgsi.CLGSI_AUTHORS` on top, then ``--set`` values), so
``msakit evaluate`` and ``msakit predict`` give the reference model's predictions. The mapping of
names and shapes is :mod:`msakit.models.import_weights`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from msakit.config import DATASETS, apply_overrides, plain
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import text_encoder_config, text_encoder_from_config
from msakit.errors import MsakitError
from msakit.files import check_distinct_output, torch_save_atomic
from msakit.models.base import Dims
from msakit.models.import_weights import SOURCES, load_reference_state
from msakit.models.registry import preset
from msakit.training.inputs import build_model, check_output_folder

CHECKPOINT_FORMAT = "msakit-checkpoint-1"


def _text_encoder_architecture(name: str) -> dict[str, Any]:
    """The ``config.json`` of a BERT-family folder or hub name (weights are not read)."""
    from transformers import AutoConfig

    if os.path.sep in name and not Path(name).exists():
        raise MsakitError(f"text encoder folder {name} does not exist")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MsakitError(f"cannot read the text encoder configuration {name!r}: {first}") from exc
    return plain(config.to_dict())


def import_weights(
    source: str,
    model: str,
    dataset: str,
    *,
    weights: str | os.PathLike,
    data: str | os.PathLike,
    text_encoder: str,
    out: str | os.PathLike,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Path:
    """Write ``out``, an msakit checkpoint holding the reference weights ``weights``.

    ``data`` (any MMSA feature file of the dataset) gives the feature sizes and padded lengths;
    ``text_encoder`` (folder or hub name) the text encoder's architecture. Raises
    :class:`MsakitError` (one line) on any problem, before writing anything.
    """
    if source not in SOURCES:
        raise MsakitError(f"unknown source {source!r}; choose {', '.join(sorted(SOURCES))}")
    src = SOURCES[source]
    if model != src.model:
        raise MsakitError(f"--from {source} holds {src.model} weights, not {model}")
    if dataset not in DATASETS:
        raise MsakitError(f"unknown dataset {dataset!r}; choose {', '.join(DATASETS)}")
    weights, out = Path(weights), Path(out)
    if not weights.is_file():
        raise MsakitError(f"weights file {weights} does not exist")
    check_distinct_output(out, [weights, data, text_encoder])
    check_output_folder(out.parent if str(out.parent) else Path("."))

    config = preset(model, dataset, src.preset)
    config.text_encoder = text_encoder
    config = apply_overrides(config, overrides or [])
    encoder = text_encoder_from_config(_text_encoder_architecture(text_encoder))
    features = load_feature_file(str(data), vocab_size=int(encoder.config.vocab_size))
    dims = Dims.of(features)
    net = build_model(config, dims, encoder)

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise MsakitError(f"{weights}: not a readable state dict ({type(exc).__name__})") from exc
    mapped = load_reference_state(src, state, net, str(weights))
    net.load_state_dict(mapped, strict=False)

    torch_save_atomic(
        {
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "epoch": 0,
            "seed": config.seeds[0],
            "valid": {},
            "config": plain(config.to_dict()),
            "dims": dims.to_dict(),
            "text_encoder_config": text_encoder_config(net.text_encoder),
            "format": CHECKPOINT_FORMAT,
            "imported_from": {"source": source, "weights": str(weights)},
        },
        out,
    )
    return out
