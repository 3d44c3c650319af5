"""ConKI's adapter pretraining stage (Algorithm 1, stage 1) and the adapters file it writes.

What only ConKI needs: the stage's configuration (:func:`stage1_config`), what stage 1 freezes
(:func:`freeze_for_stage1`) and keeps (:func:`keeps_for_stage2`), the content of
``adapters.pt`` (:func:`adapters_file`), its checks when stage 2 reads it
(:func:`read_adapters`) and its installation (:func:`install_adapters`). The generic runner,
:func:`msakit.training.stages.pretrain_adapters`, reaches these through ConKI's
``ModelSpec.adapter_stage`` (:data:`STAGE`) and names no model.

* Stage 1, :func:`msakit.training.stages.pretrain_adapters`: build ConKI for the target data
  set's preset on the *external* data set's sizes, freeze the text encoder and the audio/vision
  Transformer encoders (the per-dataset input projections stay trainable: they are new for every
  data set), train projections + adapters + F_m + fusion network + head with the task loss only
  (10 epochs, lr 5e-5 for every group, one epoch of linear warm-up, then linear decay), keep the
  best validation epoch (the Trainer's selection on validation MAE) and save its adapters to
  ``DIR/adapters.pt``.
* Stage 2 is ``msakit train --model conki --adapters DIR/adapters.pt``: the API validates the
  file with :func:`read_adapters` before writing anything and plugs it into every seed's model
  with :func:`install_adapters`, which freezes the adapters and loads the stage-1 audio/vision
  encoders. Everything else trains with the full loss, and what really happens to audio and
  vision is this: the target's raw widths differ from the external data's (MOSEI 74/35, MOSI
  5/20), so stage 2 builds *new* input projections, drawn at random, and trains them with the
  rest; F_m, the fusion network and the head start afresh too. At the first step the frozen
  audio/vision adapters therefore read hidden states of a projection they never saw; what they
  carry to the target is whatever survives the new projection learning to feed them. On
  synthetic files with a planted cross-dataset signal (benchmarks/conki_transfer.py,
  docs/readings.md, "ConKI: stage 2's new input projections") pretrained audio/vision adapters
  gave a lower test MAE than random frozen ones under this reading (1.13 against 1.24) but a
  lower Corr (0.85 against 0.90), and fitting the new projection first through the frozen
  stage-1 network (the alternative measured) did not help (1.16 / 0.84), so stage 2 keeps
  this reading.

``adapters.pt`` holds only plain types and tensors (``torch.load(weights_only=True)``)::

    {"format": "msakit-adapters-1",
     "model": {adapter parameter name: tensor},          # every name contains "adapter"
     "encoders": {audio_encoder.* / vision_encoder.*: tensor},
     "stage1_rest": {project_*, inner_fusion.*, fusion.*: tensor},   # not installed
     "adapter_signature": {...}, "config": stage-1 RunConfig, "dims": external data's sizes,
     "text_encoder_config": {...}, "text_encoder_fingerprint": sha256 hex,
     "valid": best validation metrics, "epoch": best epoch}

Reading chosen: the audio/vision encoders are randomly initialised and frozen in stage 1, so the
adapters learn to read *those* encoders' hidden states. The file therefore also carries the
stage-1 audio/vision encoder weights ("encoders"), and stage 2 starts its audio/vision encoders
from them (and fine-tunes them, as the paper does); a freshly drawn random encoder would feed
the pretrained adapters hidden states they have never seen. The text encoder needs no copy: it
must be the same pretrained checkpoint in both stages, which the fingerprint checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from torch import nn

from msakit.config import DATASETS, RunConfig, apply_overrides, plain
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError
from msakit.encoders.text import text_encoder_config
from msakit.models.base import MSAModel
from msakit.models.conki.config import ConKIConfig
from msakit.models.conki.model import ConKI
from msakit.models.conki.presets import CONKI_PRETRAIN
from msakit.models.registry import AdapterStage, preset

__all__ = ["STAGE", "adapters_file", "encoder_fingerprint", "freeze_for_stage1",
           "install_adapters", "keeps_for_stage2", "read_adapters", "stage1_config"]

SPEC_NAME = "conki"
FORMAT = "msakit-adapters-1"
# What must agree between the text encoders of the two stages (besides the weights).
ENCODER_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


# --------------------------------------------------------------------------- helpers
def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 of a text encoder's pretrained weights (names and values, pooler excluded).

    The pooler is left out: checkpoints such as all-MiniLM-L6-v2 ship none, so it is drawn at
    random on every load.
    """
    digest = hashlib.sha256()
    for name, param in sorted(encoder.named_parameters()):
        if name.startswith("pooler."):
            continue
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _encoder_summary(config: dict[str, Any]) -> str:
    return (
        f"{config.get('model_type')}, {config.get('num_hidden_layers')} layers, "
        f"{config.get('hidden_size')} wide, vocabulary {config.get('vocab_size')}"
    )



HEAD_PREFIXES = ("inner_fusion.", "fusion.")  # F_m = FC([O_m; A_m]), fusion network + MLP


def keeps_for_stage2(name: str) -> bool:
    """Whether stage 1's best checkpoint keeps the weight ``name`` (adapters, audio/vision
    encoders and projections, F_m, the fusion network and head; not the frozen text encoder)."""
    return "adapter" in name or name.startswith(
        ("audio_encoder.", "vision_encoder.", "project_audio.", "project_vision.", *HEAD_PREFIXES)
    )



def freeze_for_stage1(net: MSAModel) -> None:
    """Stage 1 trains with the text encoder and the audio/vision Transformer encoders frozen."""
    cast(ConKI, net).freeze_encoders()  # the stage runs ConKI's adapters


# --------------------------------------------------------------------------- stage 1
def stage1_config(
    dataset: str | DatasetSpec,
    *,
    text_encoder: str | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    preset_name: str = "paper",
) -> tuple[RunConfig, int]:
    """The stage-1 RunConfig for target ``dataset``, and its warm-up length in epochs.

    The target's ConKI preset, with CONKI_PRETRAIN's epochs, learning rates, weight decays and
    schedule, then the user's overrides. Metrics are those of the external data set
    (``external``); the contrastive loss is off (Algorithm 1 trains stage 1 with L_task) and
    every epoch runs (no early stop).
    """
    config = preset(SPEC_NAME, dataset, preset_name, check=False)  # checked with the overrides
    stage = {k: v for k, v in CONKI_PRETRAIN.items() if k != "warmup_epochs"}
    config = dataclasses.replace(config, **stage, warmup=0.0)
    if text_encoder is not None:
        config.text_encoder = text_encoder
    if batch is not None:
        config.batch_size = int(batch)
    if epochs is not None:
        config.epochs = int(epochs)
    # stage 1: adapters train at the stage's one rate
    config = dataclasses.replace(config, model=config.model.updated({"adapter_lr": None}))
    config = apply_overrides(config, overrides or [])
    settings = cast(ConKIConfig, config.model)  # the ConKI preset's
    if not settings.use_adapters:
        raise MsakitError("pretrain-adapters needs adapters: use_adapters=false has none")
    if not settings.pretrained_encoders:
        raise MsakitError(
            "pretrain-adapters freezes the pretrained text encoder; pretrained_encoders=false "
            "(w/o C3) is a stage-2 setting"
        )
    if settings.external not in DATASETS:
        raise MsakitError(
            f"external must be one of {', '.join(DATASETS)}, got {settings.external!r}"
        )
    # metrics of the external data set (a named one); L_task only (Algorithm 1)
    config = dataclasses.replace(config, dataset=DATASETS[settings.external],
                                 model=settings.updated({"contrastive": False}))
    config.early_stop = config.epochs
    config.seeds = config.seeds[:1]
    return config, int(CONKI_PRETRAIN["warmup_epochs"])


def adapters_file(
    best: dict[str, Any], *, net: MSAModel, extra: dict[str, Any], fingerprint: str
) -> dict[str, Any]:
    """The content of ``adapters.pt`` from stage 1's best checkpoint (format: the module
    docstring); the generic stage runner writes it."""
    weights = best["model"]
    return (
        {
            "format": FORMAT,
            "model": {k: v for k, v in weights.items() if "adapter" in k},
            "encoders": {
                k: v
                for k, v in weights.items()
                if k.startswith(("audio_encoder.", "vision_encoder."))
            },
            # Not installed in stage 2; kept to study the stage-1 network (docs/readings.md,
            # "ConKI: stage 2's new input projections").
            "stage1_rest": {
                k: v
                for k, v in weights.items()
                if k.startswith(("project_audio.", "project_vision.", *HEAD_PREFIXES))
            },
            "adapter_signature": plain(cast(ConKI, net).adapter_signature()),
            "config": extra["config"],
            "dims": extra["dims"],
            "text_encoder_config": extra["text_encoder_config"],
            "text_encoder_fingerprint": fingerprint,
            "valid": plain(best["valid"]),
            "epoch": int(best["epoch"]),
        }
    )


# --------------------------------------------------------------------------- stage 2
def read_adapters(
    path: str | os.PathLike, config: RunConfig, model: MSAModel, encoder: nn.Module
) -> dict[str, dict[str, torch.Tensor]]:
    """Load and check ``adapters.pt`` against the stage-2 run; return what to install.

    ``model`` is a model built for the run (its adapter names and shapes are the reference),
    ``encoder`` the run's pretrained text encoder as loaded: with ``pretrained_encoders=false``
    (w/o C3) the adapters must still come from that pretrained encoder, and stage 2 then
    fine-tunes a randomly initialised one under them.
    Raises :class:`MsakitError` (one line) if the file is unreadable, not an adapters file, was
    pretrained with another text encoder or adapter architecture, or its weights do not fit.
    The target data's raw audio/vision sizes need not match the external data's: adapters sit
    after the per-dataset projections.

    Returns ``{"model": adapter weights, "encoders": audio/vision encoder weights}`` restricted
    to the model's modalities.
    """
    path = Path(path)
    where = f"adapters file {path}"
    if not model.supports_adapters:
        raise MsakitError(f"--adapters does not apply to {config.model_name} (no adapters)")
    model = cast(ConKI, model)  # the model with adapters
    if not model.has_adapters:
        raise MsakitError("--adapters given but use_adapters=false: this model has no adapters")
    state = _adapter_file(path, where)
    _check_text_encoder(where, state, encoder, "text" in model.modalities)
    signature = model.adapter_signature()
    for key, value in signature.items():
        saved = state["adapter_signature"].get(key)
        if saved != value:
            raise MsakitError(
                f"{where} was pretrained with {key}={saved}, this run has {key}={value} "
                f"(--set {key}={_yaml(saved)})"
            )
    return {
        "model": _fitting(where, state["model"], model.adapter_state(), model.modalities),
        "encoders": _fitting(where, state["encoders"], model.backbone_state(), model.modalities),
    }


def _adapter_file(path: Path, where: str) -> dict[str, Any]:
    """The contents of an adapters file, with its structure checked (one error line)."""
    if not path.is_file():
        raise MsakitError(f"{where} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise MsakitError(f"{where} is not readable ({type(exc).__name__})") from exc
    kinds = {"model": dict, "encoders": dict, "adapter_signature": dict,
             "text_encoder_config": dict, "text_encoder_fingerprint": str}
    if not isinstance(state, dict) or state.get("format") != FORMAT or any(
        k not in state for k in kinds
    ):
        raise MsakitError(f"{where} is not an msakit adapters file (from pretrain-adapters)")
    for key, kind in kinds.items():
        if not isinstance(state[key], kind):
            raise MsakitError(
                f"{where}: '{key}' is a {type(state[key]).__name__}, expected a {kind.__name__} "
                "(not a file written by pretrain-adapters)"
            )
    return state


def _yaml(value: Any) -> str:
    """A value as ``--set key=VALUE`` spells it (null, true, 64, mean)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _check_text_encoder(
    where: str, state: dict[str, Any], encoder: nn.Module, uses_text: bool
) -> None:
    if not uses_text:  # the text encoder only sets shared_dim's default, checked with the rest
        return
    saved = state["text_encoder_config"]
    current = text_encoder_config(encoder)
    same_arch = all(saved.get(k) == current.get(k) for k in ENCODER_KEYS)
    if not same_arch:
        raise MsakitError(
            f"{where} was pretrained with another text encoder ({_encoder_summary(saved)}); "
            f"this run's is {_encoder_summary(current)}: pass the same --text-encoder to both "
            "stages"
        )
    if state["text_encoder_fingerprint"] != encoder_fingerprint(encoder):
        raise MsakitError(
            f"{where} was pretrained with other text encoder weights (same architecture, "
            f"{_encoder_summary(saved)}): pass the same --text-encoder to both stages"
        )


def _fitting(
    where: str,
    saved: dict[str, Any],
    expected: dict[str, torch.Tensor],
    modalities: list[str],
) -> dict[str, torch.Tensor]:
    """``saved`` restricted to ``expected``'s names, with every name present and shaped alike.

    Entries of modalities the model does not use (e.g. the vision adapter for modalities="ta")
    are ignored; any other surplus or missing entry is an error.
    """
    if not isinstance(saved, dict):
        raise MsakitError(f"{where}: weights are not a name -> tensor mapping")
    absent = [m for m in ("text", "vision", "audio") if m not in modalities]
    for name in saved:
        if name not in expected and not any(m in name.split(".", 1)[0] for m in absent):
            raise MsakitError(f"{where}: unexpected weight {name!r} (not in this ConKI model)")
    out = {}
    for name, reference in expected.items():
        value = saved.get(name)
        if value is None:
            raise MsakitError(f"{where}: no weight {name!r} (pretrained with other modalities?)")
        if not isinstance(value, torch.Tensor) or value.shape != reference.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise MsakitError(
                f"{where}: {name} has shape {shape}, this model needs {tuple(reference.shape)}"
            )
        out[name] = value
    return out


def install_adapters(model: MSAModel, state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Load pretrained adapters (frozen: ``requires_grad=False``) and the stage-1 encoders."""
    weights = {**state["model"], **state["encoders"]}
    _, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise MsakitError(f"adapters do not fit the model: unexpected {unexpected[0]!r}")
    for name, param in model.named_parameters():
        if name in state["model"]:
            param.requires_grad_(False)


STAGE = AdapterStage(
    config=stage1_config,
    prepare=freeze_for_stage1,
    keep=keeps_for_stage2,
    content=adapters_file,
    read=read_adapters,
    install=install_adapters,
    fingerprint=encoder_fingerprint,
)
"""ConKI's adapter stage, declared in its ``ModelSpec``."""
