"""A pickle reader that runs no code: only what MMSA feature files hold is rebuilt.

Unpickling calls whatever functions the file names (``os.system``, ``eval``, ...). An MMSA
feature file only needs containers, strings and numbers (pickle opcodes, no function call) and
NumPy arrays, dtypes and scalars, which pickle rebuilds through a handful of NumPy functions.
:class:`RestrictedUnpickler` resolves exactly those names (under NumPy 1.x's ``numpy.core`` and
NumPy 2.x's ``numpy._core`` module paths alike) and refuses any other, so loading a file, whatever
its name or pickle protocol (0-5), can rebuild data and nothing else. The refusal happens when
the name is read, before anything could be called.
"""

from __future__ import annotations

import builtins
import codecs
import importlib
import io
import pickle
from collections import OrderedDict
from typing import IO, Any

from msakit.errors import MsakitError

__all__ = ["RestrictedUnpickler", "DisallowedGlobal", "restricted_load", "ALLOWED_GLOBALS"]


class DisallowedGlobal(pickle.UnpicklingError):
    """The pickle names a function or class that feature files never hold."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as pickle protocols 0-2 use it for bytes (``encode(str, 'latin1')``);
    other codecs are refused (some of them decompress or run other machinery)."""
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("iso8859-1", "utf-8"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return text.encode(encoding, errors)


def _numpy_attr(names: tuple[str, ...], attr: str) -> Any:
    for module in names:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(attr)


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")

# (module, name) -> how to get the object (a NumPy module path of either major version).
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): lambda: _numpy_attr(_MULTIARRAY, "_reconstruct") for m in _MULTIARRAY},
    **{(m, "scalar"): lambda: _numpy_attr(_MULTIARRAY, "scalar") for m in _MULTIARRAY},
    **{(m, "_frombuffer"): lambda: _numpy_attr(_NUMERIC, "_frombuffer") for m in _NUMERIC},
    ("numpy", "ndarray"): lambda: _numpy_attr(("numpy",), "ndarray"),
    ("numpy", "dtype"): lambda: _numpy_attr(("numpy",), "dtype"),
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("collections", "OrderedDict"): lambda: OrderedDict,
    **{("builtins", n): (lambda n=n: getattr(builtins, n))
       for n in ("set", "frozenset", "bytearray", "complex", "slice")},
    **{("__builtin__", n): (lambda n=n: getattr(builtins, n))  # Python 2 pickles
       for n in ("set", "frozenset", "bytearray", "complex", "slice")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise DisallowedGlobal(module, name)
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_load(f: IO[bytes] | bytes, path: str = "<pickle>") -> Any:
    """Unpickle ``f`` with :class:`RestrictedUnpickler`.

    A disallowed name is one :class:`MsakitError` naming it; other failures are left to the
    caller (``EOFError`` and ``UnpicklingError`` for truncated or corrupt files, ...).
    """
    if isinstance(f, (bytes, bytearray)):
        f = io.BytesIO(f)
    try:
        return RestrictedUnpickler(f).load()
    except DisallowedGlobal as exc:
        raise MsakitError(
            f"{path}: refused: the pickle calls {exc.module}.{exc.name}, which a feature file "
            "never holds (only dicts, lists, tuples, strings, numbers and NumPy arrays are "
            "allowed); nothing was run"
        ) from None
