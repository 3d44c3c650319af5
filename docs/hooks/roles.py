"""A griffe extension for the API reference: msakit's docstrings use reStructuredText's inline
markup (``code``, :func:`msakit.x`, :class:`...`); this renders them as Markdown code and, where
the target is documented on the site, as a link (an optional cross-reference)."""

from __future__ import annotations

import re

from griffe import Extension

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _reference(match: re.Match) -> str:
    target = match.group(1)
    title = target.rsplit(".", 1)[-1] if target.startswith("msakit.") else target
    if target.startswith("msakit."):
        return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'
    return f"`{title}`"


def markdown(text: str) -> str:
    return _LITERAL.sub(r"`\1`", _ROLE.sub(_reference, text))


class Roles(Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
