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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from msakit.core.errors import MsakitError

_CONFIGS: dict[str, type[ModelConfig]] = {}
_FINDERS: list[Callable[[], None]] = []


def hp(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A documented setting: ``low <= value``, ``value > above`` and ``value < high`` (when
    given), or one of ``choices``. A ``float`` field with ``high=1.0`` and ``low=0.0`` is a
    probability in [0, 1). The bounds apply to every value of a list or a mapping. A callable
    ``default`` (``list``, ``lambda: [...]``) is a factory: each instance gets a fresh value.

    Model hyperparameters (:class:`ModelConfig`) and run settings
    (:class:`msakit.config.RunConfig`) are both declared with it and checked by one function,
    :func:`check_settings`."""
    meta = {"doc": doc, "low": low, "high": high, "above": above, "choices": choices}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_settings(settings: Any, owner: str = "") -> None:
    """The one check of declared settings: every field of the dataclass ``settings`` against
    its :func:`hp` bounds and choices (one ``MsakitError`` naming ``owner`` and the field)."""
    for f in dataclasses.fields(settings):
        _check_field(owner, f, getattr(settings, f.name))


def describe_settings(cls: type) -> dict[str, str]:
    """{field: its documentation} of a dataclass declared with :func:`hp`."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def config_class(model: str) -> type[ModelConfig] | None:
    """The ModelConfig class registered for ``model`` (None when no such model is known).

    A name not registered yet asks the finders (:func:`add_config_finder`: the model registry
    adds the import of its built-in models) before answering None."""
    if model not in _CONFIGS:
        for find in _FINDERS:
            find()
    return _CONFIGS.get(model)


def add_config_finder(find: Callable[[], None]) -> None:
    """``find()`` registers more configs (imports model files); called for an unknown name.
    The layer above (:mod:`msakit.models.registry`) adds its loader, so that this layer reads
    a run's model settings by name without importing the models."""
    if find not in _FINDERS:
        _FINDERS.append(find)


_Config = TypeVar("_Config", bound="ModelConfig")
"""A :class:`ModelConfig` subclass: ``from_dict`` and ``updated`` return the caller's class."""


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
    def from_dict(
        cls: type[_Config], data: dict[str, Any] | ModelConfig | None = None, *,
        check: bool = True,
    ) -> _Config:
        """The config from a plain mapping (missing keys take their defaults), typed and, with
        ``check``, checked. An instance of this class is returned as it is: it was checked
        where it was made (a run's configuration checks its model's once,
        :meth:`msakit.config.RunConfig.check`)."""
        if isinstance(data, cls):
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
        if check:
            config.check()
        return config

    def updated(self: _Config, changes: dict[str, Any]) -> _Config:
        """A copy with ``changes`` (a preset layer, ``--set`` values) typed as the fields are
        (:func:`dataclasses.replace`); unchecked: the run's configuration checks it once."""
        if not changes:
            return self
        return type(self).from_dict({**self.to_dict(), **changes}, check=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def __getitem__(self, key: str) -> Any:
        """A hyperparameter read by name, as the plain mapping of earlier versions was (tests
        and notebooks; msakit's own code reads attributes). Read-only: a change is a new
        config (:meth:`updated`)."""
        if not isinstance(key, str) or key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` names a hyperparameter (as ``key in mapping`` did)."""
        return isinstance(key, str) and key in self.__dataclass_fields__

    def keys(self) -> list[str]:
        """The hyperparameters' names (``{**config}`` and ``dict(config)`` give the mapping)."""
        return [f.name for f in dataclasses.fields(self)]

    def items(self) -> list[tuple[str, Any]]:
        """(name, value) of every hyperparameter, as the mapping's ``items()``."""
        return [(name, getattr(self, name)) for name in self.keys()]

    @classmethod
    def field_type(cls, name: str) -> Any:
        """The annotated type of field ``name`` (None if there is no such field)."""
        return typing.get_type_hints(cls).get(name)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """{field: its documentation}, for ``--help`` and docs."""
        return describe_settings(cls)

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Ranges and choices of every field, then :meth:`check_combination`."""
        check_settings(self, self.model or type(self).__name__)
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


def _check_field(owner: str, f: dataclasses.Field, value: Any) -> None:
    """One field's value (each value of a list or mapping) against its :func:`hp` metadata."""
    name = f"{owner} {f.name}" if owner else f.name
    if isinstance(value, dict):
        items = [(f"{name}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(name, value)]
    for where, item in items:
        _check_value(where, f.metadata, item)


def _check_value(name: str, meta: Any, value: Any) -> None:
    choices, low, high, above = (meta.get(k) for k in ("choices", "low", "high", "above"))
    if value is None:
        return
    if choices is not None and value not in choices:
        raise MsakitError(
            f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise MsakitError(f"{name} must be a finite number, got {value}")
    if above is not None and not value > above:
        raise MsakitError(f"{name} must be a number > {above:g}, got {value}")
    if low is not None and value < low:
        raise MsakitError(f"{name} must be at least {low}, got {value}")
    if high is not None and not value < high:
        raise MsakitError(f"{name} must be below {high}, got {value}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
