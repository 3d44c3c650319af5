"""``msakit import-weights``: a reference implementation's trained weights as an msakit checkpoint.

The checkpoint has the format of a ``best.pt`` written by training (``{"model": state_dict,
"config": ..., "dims": ..., "text_encoder_config": ...}``), with the configuration that
reproduces the reference's computation (for ``clgsi-authors``: the paper preset of the dataset
with :data:`msakit.models.clgsi.CLGSI_AUTHORS` on top; for a source in the model's registry
entry, e.g. ``mmsa``, the model's named preset of that name if it has one, else ``paper``; then
``--set`` values), so
``msakit evaluate`` and ``msakit predict`` give the reference model's predictions. The mapping of
names and shapes is :mod:`msakit.models.import_weights` (``clgsi-authors``) or the model's own
importer (``ModelSpec.imports``, checked against the model by
:func:`~msakit.models.import_weights.check_mapped`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msakit.config import DATASETS, RunConfig, apply_overrides, plain
from msakit.config.presets import DEFAULT_PRESET
from msakit.core.errors import MsakitError
from msakit.core.files import torch_save_atomic
from msakit.core.safety import check_distinct_output
from msakit.data.mmsa import FeatureFile, load_feature_file
from msakit.encoders.text import (
    check_text_length,
    text_encoder_config,
    text_encoder_from_config,
)
from msakit.models.base import Dims, MSAModel
from msakit.models.import_weights import (
    SOURCES,
    check_mapped,
    load_reference_state,
    plain_state_dict,
)
from msakit.models.registry import model_names, model_spec, preset
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


def import_sources() -> dict[str, list[str]]:
    """Every ``--from`` source and the models it holds weights of."""
    sources = {name: [src.model] for name, src in SOURCES.items()}
    for model in model_names():
        for name in model_spec(model).imports:
            sources.setdefault(name, []).append(model)
    return sources


def import_weights(
    source: str,
    model: str,
    dataset: str,
    *,
    weights: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    text_encoder: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Path:
    """Write ``out``, an msakit checkpoint holding the reference weights ``weights``.

    ``source`` is ``clgsi-authors`` (:data:`~msakit.models.import_weights.SOURCES`) or a name
    in the model's ``imports`` (its registry entry; e.g. ``mmsa``: a state dict saved from
    MMSA's ``AMIO``). ``data`` (any MMSA feature file of the dataset) gives the feature sizes
    and padded lengths; ``text_encoder`` (folder or hub name) the text encoder's architecture,
    for models that have one. Raises :class:`MsakitError` (one line) on any problem, before
    writing anything.
    """
    spec, sources = model_spec(model), import_sources()
    if source not in sources:
        raise MsakitError(f"unknown source {source!r}; choose {', '.join(sorted(sources))}")
    if model not in sources[source]:
        raise MsakitError(f"--from {source} holds {', '.join(sources[source])} weights, not "
                          f"{model}")
    if dataset not in DATASETS:
        raise MsakitError(f"unknown dataset {dataset!r}; choose {', '.join(DATASETS)}")
    weights, out = Path(weights), Path(out)
    if not weights.is_file():
        raise MsakitError(f"weights file {weights} does not exist")
    check_distinct_output(out, [weights, data, *([text_encoder] if text_encoder else [])])
    check_output_folder(out.parent if str(out.parent) else Path("."))

    named = SOURCES[source].preset if source in SOURCES else (
        source if source in spec.named_presets else DEFAULT_PRESET)
    config = preset(model, dataset, named)
    if text_encoder is not None:
        config.text_encoder = text_encoder
    config = apply_overrides(config, overrides or [])
    if config.standardize:
        raise MsakitError("--set standardize=true does not apply to import-weights: the "
                          "imported weights were trained on the file's features as they are")
    encoder, features = _architecture(spec.text_input, config, data)
    dims = Dims.of(features)
    net = build_model(config, dims, encoder)
    state = _read_state(weights)
    if source in SOURCES:
        net.load_state_dict(load_reference_state(SOURCES[source], state, net, str(weights)),
                            strict=False)
    else:
        state = plain_state_dict(state, str(weights))
        try:
            mapped = spec.imports[source](state)
        except MsakitError as exc:
            raise MsakitError(f"{weights}: {exc}") from None
        net.load_state_dict(check_mapped(mapped, net, str(weights)))
    _write_checkpoint(net, config, dims, origin={"source": source, "weights": str(weights)},
                      out=out)
    return out


def _architecture(text_input: str, config: RunConfig, data: str | os.PathLike
                  ) -> tuple[nn.Module | None, FeatureFile]:
    """The text encoder's architecture (random weights; None for a model that reads the file's
    precomputed text features) and the feature file, loaded as the model reads it."""
    if text_input == "features":
        if config.text_encoder is not None:
            raise MsakitError(f"{config.model_name} reads the file's precomputed text features, "
                              f"not a text encoder: drop --text-encoder {config.text_encoder}")
        return None, load_feature_file(str(data), text_features=True)
    if config.text_encoder is None:
        raise MsakitError(f"{config.model_name} has a text encoder: name the one the weights "
                          "were trained with (--text-encoder DIR or hub name)")
    encoder = text_encoder_from_config(_text_encoder_architecture(config.text_encoder))
    assert encoder is not None  # a config.json's architecture is never empty
    features = load_feature_file(str(data), vocab_size=int(encoder.config.vocab_size))
    check_text_length(features.text_len, encoder.config, str(data), config.text_encoder)
    return encoder, features


def _read_state(weights: Path) -> Any:
    try:
        return torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise MsakitError(f"{weights}: not a readable state dict ({type(exc).__name__})") from exc


def _write_checkpoint(net: MSAModel, config: RunConfig, dims: Dims, *, origin: dict[str, str],
                      out: Path) -> None:
    torch_save_atomic(
        {
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "epoch": 0,
            "seed": config.seeds[0],
            "valid": {},
            "config": plain(config.to_dict()),
            "dims": dims.to_dict(),
            "text_encoder_config": text_encoder_config(getattr(net, "text_encoder", None)),
            "format": CHECKPOINT_FORMAT,
            "imported_from": origin,
        },
        out,
    )
