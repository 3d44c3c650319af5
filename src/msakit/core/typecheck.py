"""The public API's argument check: every argument against its annotation, before the function
runs (:func:`checked_arguments`), so that ``seeds="12"`` or ``epochs=2.7`` is one ``error:``
line, not seeds [1, 2] or 2 epochs."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar, cast

from msakit.core.errors import MsakitError

_Function = TypeVar("_Function", bound=Callable[..., Any])


def checked_arguments(fn: _Function) -> _Function:
    """``fn`` with its arguments checked against its annotations before it runs (pydantic's
    strict validation: no coercion; ``bool`` is no ``int``, ``"12"`` no ``list[int]``, an
    ``int`` is a ``float``; classes by ``isinstance``). A mismatch is one ``MsakitError``
    naming the function, the argument, the annotation and the value given."""
    signature = inspect.signature(fn)
    adapters: dict[str, Any] = {}

    def adapter(name: str) -> Any:  # built on first use: importing msakit stays quick
        if name not in adapters:
            from pydantic import ConfigDict, TypeAdapter

            hint = typing.get_type_hints(fn).get(name, Any)
            adapters[name] = None if hint is Any else TypeAdapter(
                hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
        return adapters[name]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise MsakitError(f"msakit.{fn.__name__}: {exc}") from None
        for name, value in bound.arguments.items():
            check = adapter(name)
            try:
                if check is not None:
                    check.validate_python(value, strict=True)
            except ValidationError:
                given = repr(value)
                given = given if len(given) <= 60 else given[:57] + "..."
                raise MsakitError(
                    f"msakit.{fn.__name__}: {name} must be {fn.__annotations__[name]}, got "
                    f"{given} (of type {type(value).__name__})") from None
        return fn(*args, **kwargs)

    return cast(_Function, call)  # functools.wraps: fn's signature, checked
