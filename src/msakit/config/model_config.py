"""Typed model hyperparameters: one dataclass per model, every field documented and checked.

A model's file declares its hyperparameters as a :class:`ModelConfig` subclass, like
Hugging Face's ``BertConfig`` or nanoGPT's ``GPTConfig``, naming its model in the class line::

    @dataclass
    class TinyConfig(ModelConfig, model="tiny"):
        width: int = hp(32, "hidden width", low=1)
        dropout: float = hp(0.1, "dropout probability", low=0.0, high=1.0)
        pool: str = hp("mean", "how frames are pooled", choices=("mean", "last"))

The defaults are the paper's values; a model is built from ``TinyConfig()`` alone, without
presets. :meth:`ModelConfig.from_dict` turns the plain mapping a run stores (``config.yaml``,
checkpoints) into the dataclass and checks every value's type, range and choices, so a mistyped
``--set`` key or value is one ``error:`` line before anything is loaded.

The class line registers the config under the model's name (:func:`config_class`), which lets
the run configuration's ``--set`` and validation code (this layer) find a model's field types
without importing the models.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from msakit.core.errors import MsakitError

_CONFIGS: dict[str, type[ModelConfig]] = {}


def hp(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A documented hyperparameter: ``low <= value`` and ``value < high`` (when given), or one of
    ``choices``. A ``float`` field with ``high=1.0`` and ``low=0.0`` is a probability in [0, 1)."""
    meta = {"doc": doc, "low": low, "high": high, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def config_class(model: str) -> type[ModelConfig] | None:
    """The ModelConfig class registered for ``model`` (None when no such model is loaded)."""
    return _CONFIGS.get(model)


@dataclass
class ModelConfig:
    """Base of every model's hyperparameters (see the module docstring)."""

    model: ClassVar[str] = ""

    def __init_subclass__(cls, model: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if model:
            cls.model = model
            _CONFIGS[model] = cls

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, data: dict[str, Any] | ModelConfig | None = None) -> ModelConfig:
        """The config from a plain mapping (missing keys take their defaults), checked."""
        if isinstance(data, cls):
            data.check()
            return data
        if isinstance(data, ModelConfig):
            data = data.to_dict()
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MsakitError(
                f"{cls.model or cls.__name__} has no hyperparameter {unknown[0]!r}; valid: "
                f"{', '.join(sorted(names))}"
            )
        hints = typing.get_type_hints(cls)
        values = {k: _typed(cls.model, k, v, hints[k]) for k, v in data.items()}
        config = cls(**values)
        config.check()
        return config

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def field_type(cls, name: str) -> Any:
        """The annotated type of field ``name`` (None if there is no such field)."""
        return typing.get_type_hints(cls).get(name)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """{field: its documentation}, for ``--help`` and docs."""
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Ranges and choices of every field, then :meth:`check_combination`."""
        for f in dataclasses.fields(self):
            _check_field(self.model or type(self).__name__, f, getattr(self, f.name))
        self.check_combination()

    def check_combination(self) -> None:
        """Constraints between fields; a model overrides this (raise MsakitError)."""


def _allowed(annotation: Any) -> tuple[type, ...]:
    """The runtime types an annotation allows (``int | None`` -> (int, NoneType))."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        out: tuple[type, ...] = ()
        for arg in typing.get_args(annotation):
            out += _allowed(arg)
        return out
    origin = typing.get_origin(annotation)
    return (origin,) if origin is not None else (annotation,)


def _typed(model: str, key: str, value: Any, annotation: Any) -> Any:
    """``value`` as the field's type: ints are floats where a float is asked, YAML lists are
    tuples where a tuple is asked; anything else of the wrong type is an error."""
    allowed = _allowed(annotation)
    if value is None:
        if type(None) in allowed:
            return None
        raise MsakitError(f"{model} {key}: may not be null")
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int):
        if int in allowed:
            return value
        if float in allowed:
            return float(value)
    elif isinstance(value, (list, tuple)):
        if tuple in allowed:
            return tuple(value)
    elif type(value) in allowed:  # float, str
        return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise MsakitError(f"{model} {key}: expected {names}, got {value!r}")


def _check_field(model: str, f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    choices, low, high = meta.get("choices"), meta.get("low"), meta.get("high")
    if value is None:
        return
    if choices is not None and value not in choices:
        raise MsakitError(
            f"{model} {f.name} must be one of {', '.join(map(str, choices))}, got {value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise MsakitError(f"{model} {f.name} must be a finite number, got {value}")
    if low is not None and value < low:
        raise MsakitError(f"{model} {f.name} must be at least {low}, got {value}")
    if high is not None and not value < high:
        raise MsakitError(f"{model} {f.name} must be below {high}, got {value}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
