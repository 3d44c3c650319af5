"""What every training command does before its first step.

``msakit train`` (:func:`msakit.api.train`) and ConKI's stage 1 (``msakit pretrain-adapters``,
:func:`msakit.training.stages.pretrain_adapters`) check the request the same way (a data file
given, an output folder that can be written, a global batch that every rank gets a share of),
load the text encoder and then the feature file once (the file's token ids are checked against
the encoder's vocabulary size, and against its tokenizer by re-tokenising a few ``raw_text``
entries: :func:`msakit.data.tokens.check_vocabulary`), and describe the run in every checkpoint
they write. The data file's content identity (:func:`msakit.data.identity.identity`, one read of
the whole file per loaded file) is recorded in the run's configuration (``data``), hence in
``config.yaml`` and every checkpoint. Nothing is written here: :func:`write_run_config` writes
``out/config.yaml`` once a command has validated everything else.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from msakit.config import RunConfig, plain
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError
from msakit.core.files import write_text_atomic
from msakit.core.safety import Input, check_input
from msakit.data.identity import identity as data_identity
from msakit.data.missing import run_rates, with_missing_file
from msakit.data.mmsa import FeatureFile, check_dataset, load_feature_file
from msakit.data.standardize import FeatureStats, feature_stats
from msakit.data.tokens import check_vocabulary
from msakit.encoders.text import (
    check_text_length,
    load_text_encoder,
    load_tokenizer,
    text_encoder_config,
)
from msakit.extract.settings import read_metadata
from msakit.models.base import Dims, MSAModel
from msakit.models.registry import create_model, model_names, model_spec
from msakit.training.device import amp_mode, autocast_settings
from msakit.training.distributed import DistContext

__all__ = [
    "LoadedInputs",
    "RunInputs",
    "build_model",
    "check_output_folder",
    "load_encoder_and_data",
    "load_inputs",
    "prepare_run",
    "run_stats",
    "write_run_config",
]


@dataclass
class RunInputs:
    encoder: nn.Module | None
    """The text encoder as loaded (pretrained weights; each model gets its own copy); None
    for a model that reads precomputed text features."""
    features: FeatureFile
    dims: Dims
    config: RunConfig
    """The run's configuration with ``data``, the file's content identity, filled in."""
    checkpoint_extra: dict[str, Any]
    """Stored beside the weights in every checkpoint: the configuration, the feature dims, the
    text encoder's architecture and the checkpoint ``format``; for a file written by
    ``msakit extract`` also its extractor record (``extractor``, see
    :mod:`msakit.extract.settings`), which ``predict --video`` follows."""
    stats: FeatureStats | None = None
    """The training split's feature statistics with ``standardize=true`` (else None); every
    model of the run is built with them (:func:`build_model`)."""


@dataclass(frozen=True)
class LoadedInputs:
    """A text encoder and a feature file loaded and checked once (:func:`load_inputs`), for
    several runs in one process: ``msakit tune`` loads them once per worker and passes them to
    every trial (:func:`msakit.api.train` ``loaded=``). Runs only read them: each model gets a
    copy of the encoder, and the feature arrays are never written to."""

    text_encoder: str | None
    data: str
    dataset: DatasetSpec
    allow_vocab_mismatch: bool
    encoder: nn.Module | None
    features: FeatureFile
    identity: dict[str, Any]
    """The file's content identity (:func:`msakit.data.identity.identity`), read once here."""

    def check_fits(self, config: RunConfig, data: str | os.PathLike) -> None:
        """Raise unless these inputs are what ``config`` and ``data`` would load."""
        wanted = (config.text_encoder, str(data), config.spec, config.allow_vocab_mismatch)
        have = (self.text_encoder, self.data, self.dataset, self.allow_vocab_mismatch)
        if wanted != have:
            raise MsakitError(
                f"the inputs loaded for {self.data} (text encoder {self.text_encoder}) do not fit "
                f"this run ({data}, text encoder {config.text_encoder})"
            )


def load_inputs(
    config: RunConfig, data: str | os.PathLike, *, announce: bool = True
) -> LoadedInputs:
    """:func:`load_encoder_and_data`, kept with what it was loaded for."""
    encoder, features = load_encoder_and_data(config, data, announce=announce)
    return LoadedInputs(
        text_encoder=config.text_encoder, data=str(data), dataset=config.spec,
        allow_vocab_mismatch=config.allow_vocab_mismatch, encoder=encoder, features=features,
        identity=data_identity(data),  # after the reader accepted the file (a regular file)
    )


def check_output_folder(out: Path) -> None:
    """Raise unless ``out`` is a folder, or can become one, that this process may write."""
    if out.exists() and not out.is_dir():
        raise MsakitError(f"output {out} exists and is not a folder")
    parent = out if out.exists() else out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise MsakitError(f"cannot write to {out}")


def build_model(
    config: RunConfig, dims: Dims, encoder: nn.Module | None, *, stats: FeatureStats | None = None
) -> MSAModel:
    """The registry's model for ``config``; an impossible combination is one ``MsakitError``.

    With ``config.standardize`` the model standardises its audio and vision with ``stats``
    (:func:`run_stats`; None when a checkpoint's state dict will supply them; see
    :meth:`MSAModel.add_standardizer`)."""
    try:
        model = create_model(config.model_name, config.model, dims, encoder)
    except ValueError as exc:
        raise MsakitError(f"cannot build {config.model_name}: {exc}{_heads_hint(config, exc)}"
                          ) from exc
    if config.standardize:
        model.add_standardizer(dims, stats)
    return model


def run_stats(config: RunConfig, features: FeatureFile) -> FeatureStats | None:
    """The training split's feature statistics when ``config.standardize`` (computed once per
    run, the same for every seed), else None."""
    return feature_stats(features.splits["train"]) if config.standardize else None


def _heads_hint(config: RunConfig, exc: ValueError) -> str:
    """Which ``--set`` keys choose the heads, when heads do not divide a file's feature width."""
    fields = dataclasses.fields(model_spec(config.model_name).config)
    keys = [f.name for f in fields if f.name.endswith("heads")]
    if "heads do not divide" not in str(exc) or not keys:
        return ""
    return f"; choose heads that divide the widths with --set {' / '.join(keys)}=N"


def prepare_run(
    config: RunConfig,
    data: str | os.PathLike,
    out: Path,
    ctx: DistContext,
    *,
    checkpoint_format: str,
    loaded: LoadedInputs | None = None,
) -> RunInputs:
    """Check the request, then load the text encoder and the feature file (see the module
    docstring), or take them from ``loaded`` when a caller has loaded them already for the
    same configuration and file (:class:`LoadedInputs`). Raises :class:`MsakitError` with one
    line naming the problem. The returned ``config`` (what the run writes and trains with) has
    the file's content identity as ``data``."""
    if not str(data):
        raise MsakitError("no data file given (--data FILE)")
    check_input(Input("--data", Path(data)))  # a FIFO or a device: one line, not a hang
    if config.batch_size < ctx.world_size:
        raise MsakitError(
            f"global batch {config.batch_size} is smaller than the {ctx.world_size} ranks"
        )
    # Precision the device cannot run (amp=fp16 on a CPU) is refused before anything is written.
    autocast_settings(ctx.device.type, amp_mode(config.amp, config.bf16))
    check_output_folder(out)
    if loaded is None:
        loaded = load_inputs(config, data, announce=ctx.is_main)
    loaded.check_fits(config, data)
    encoder, features = loaded.encoder, loaded.features
    # MMSA's missing-modality protocol (run settings missing_rate, missing_seed): the batches of
    # every split lose the dropped positions, for every model (msakit.data.missing).
    features = with_missing_file(features, run_rates(config))
    smallest = max(2, ctx.world_size)
    if len(features.splits["train"]) < smallest:
        raise MsakitError(
            f"{data}: split 'train' has {len(features.splits['train'])} sample(s); training "
            f"needs at least {smallest} (BatchNorm needs 2 samples a batch)"
        )
    dims = Dims.of(features)
    config = dataclasses.replace(config, data=dict(loaded.identity))
    extra = {
        "config": plain(config.to_dict()),
        "dims": dims.to_dict(),
        "text_encoder_config": text_encoder_config(encoder),
        "format": checkpoint_format,
    }

    extractor = read_metadata(str(data))  # files from `msakit extract`: how to redo the features
    if extractor is not None:
        extra["extractor"] = extractor
    return RunInputs(encoder=encoder, features=features, dims=dims, config=config,
                     checkpoint_extra=extra, stats=run_stats(config, features))


def load_encoder_and_data(
    config: RunConfig, data: str | os.PathLike, *, announce: bool = True
) -> tuple[nn.Module | None, FeatureFile]:
    """The run's text encoder and its feature file, whose token ids must fit the encoder's
    vocabulary and, unless ``config.allow_vocab_mismatch``, come from its tokenizer.

    A model that reads the file's precomputed text features (``text_input="features"`` in its
    registry entry) gets no text encoder (None) and the file with its ``text`` key.
    With ``announce``, one ``note:`` line on stderr says when the ids could not be checked
    because the encoder ships no tokenizer (a file without ``raw_text`` is skipped silently).
    """
    if model_spec(config.model_name).text_input == "features":
        if config.text_encoder is not None:
            raise MsakitError(
                f"{config.model_name} reads the file's precomputed text features, not a text "
                f"encoder: drop --text-encoder {config.text_encoder}")
        _refuse_extracted_file(config.model_name, data)
        features = load_feature_file(str(data), text_features=True)
        check_dataset(features, config.spec)
        return None, features
    encoder = load_text_encoder(config.text_encoder)
    features = load_feature_file(str(data), vocab_size=int(encoder.config.vocab_size))
    check_text_length(features.text_len, encoder.config, str(data), config.text_encoder)
    check_dataset(features, config.spec)
    has_text = any(s.raw_text is not None for s in features.splits.values())
    if has_text and not config.allow_vocab_mismatch:
        tokenizer = load_tokenizer(config.text_encoder)
        if tokenizer is not None:
            check_vocabulary(features, tokenizer, str(config.text_encoder))
        elif announce:
            print(f"note: no tokenizer found for text encoder {config.text_encoder}; the token "
                  f"ids of {data} are not checked against its vocabulary", file=sys.stderr)
    return encoder, features


def _refuse_extracted_file(model: str, data: str | os.PathLike) -> None:
    """A file from ``msakit extract`` has token ids (``text_bert``) but no precomputed text
    features: a model that reads those cannot train on it."""

    if read_metadata(str(data)) is None:
        return
    readers = [n for n in model_names() if model_spec(n).text_input == "encoder"]
    raise MsakitError(
        f"{data}: a file from 'msakit extract' holds token ids ('text_bert') for a text "
        f"encoder, not the precomputed text features ('text') that {model} reads; train a "
        f"model with a text encoder on it ({', '.join(readers)})"
    )


def write_run_config(config: RunConfig, out: Path, ctx: DistContext) -> None:
    """``out/config.yaml`` (the main rank only)."""
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        path, text = out / "config.yaml", config.to_yaml()
        if not (path.is_file() and path.read_text() == text):  # a resume rewrites nothing
            write_text_atomic(path, text)
