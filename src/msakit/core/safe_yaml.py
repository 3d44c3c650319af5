"""YAML as msakit reads and writes it.

Every YAML text msakit reads (``--config``, ``--dataset-spec``, a run's ``config.yaml`` read by
``train``, ``--resume`` and ``report``, ``--set`` values) goes through :func:`load_yaml` (files
through :func:`read_yaml`): ``yaml.safe_load`` less the ways a small text becomes a huge or
endless object:

* aliases (``*name``, also in ``<<: *name`` merges) are refused: nine nested lists of nine
  aliases each, 450 bytes, expand to hundreds of millions of nodes (the "billion laughs");
* nesting deeper than :data:`MAX_DEPTH` is refused (PyYAML composes recursively);
* a file longer than :data:`MAX_YAML_BYTES` is refused before it is parsed (an msakit
  ``config.yaml`` is a few KB); a number too long for Python to convert is refused.

Each refusal is a ``yaml.YAMLError`` with a ``problem``, which every reader already reports
as its one ``error:`` line. msakit writes YAML with :func:`dump_yaml`, which writes no anchors
or aliases (PyYAML's ``safe_dump`` writes them for an object that appears twice), so that every
file it writes reads back.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from msakit.core.files import open_input

__all__ = ["load_yaml", "read_yaml", "dump_yaml", "problem", "YamlRefused", "MAX_DEPTH",
           "MAX_YAML_BYTES"]

MAX_DEPTH = 64
"""The deepest nesting of lists and mappings accepted."""
MAX_YAML_BYTES = 1 << 20
"""The longest YAML file or text accepted (1 MiB)."""


class YamlRefused(yaml.YAMLError):
    """YAML that msakit does not read (an alias, too deep, too long); ``problem`` says why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` refusing aliases and deep nesting while it composes the node tree."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YamlRefused(f"aliases (*{event.anchor}) are not allowed in files msakit reads "
                              f"(line {event.start_mark.line + 1})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load(text)`` without aliases, deep nesting or a text over
    :data:`MAX_YAML_BYTES` (see the module docstring); raises ``yaml.YAMLError``."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlRefused(f"longer than {MAX_YAML_BYTES} bytes")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise what they raise
        # (ValueError for an integer of more digits than Python converts, IndexError for some
        # malformed tagged scalars, found by fuzzing): the parser's one boundary says so here.
        raise YamlRefused(f"a value cannot be read ({type(exc).__name__}: "
                          f"{str(exc)[:100]})") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The YAML file ``path`` read with :func:`load_yaml`, reading no more than
    :data:`MAX_YAML_BYTES` + 1 bytes. Raises ``OSError``, ``UnicodeDecodeError`` or
    ``yaml.YAMLError``."""
    with open_input(path, "rb") as f:  # a FIFO: one line at once, never a hang
        data = f.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise YamlRefused(f"longer than {MAX_YAML_BYTES} bytes")
    return load_yaml(data.decode("utf-8"))


def problem(exc: BaseException) -> str:
    """What is wrong, in a few words: a YAML error's ``problem``, else the exception's type."""
    return getattr(exc, "problem", None) or type(exc).__name__


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(value: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump(value, **kwargs)`` without anchors and aliases."""
    return yaml.dump(value, Dumper=_Dumper, **kwargs)
