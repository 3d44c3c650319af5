"""One registry: model name -> builder. ``create_model(name, ...)`` is the one way in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from msakit.errors import MsakitError
from msakit.models.base import Dims, MSAModel

Builder = Callable[..., MSAModel]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return wrap


def available_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_model(
    name: str, model_config: dict[str, Any], dims: Dims, text_encoder: nn.Module
) -> MSAModel:
    """Build model ``name`` from its hyperparameters, the data's dims and a text encoder.

    The model is built with PyTorch's own dropouts and changes nothing outside itself; the
    fast CPU dropout is a training setting (``fast_dropout``), which the Trainer applies to
    the model it trains (:func:`~msakit.encoders.dropout.use_fast_dropout`)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise MsakitError(f"unknown model {name!r}; choose {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](model_config, dims, text_encoder)


def _load_builtin() -> None:
    # Importing the model files registers them.
    from msakit.models import clgsi, conki  # noqa: F401
