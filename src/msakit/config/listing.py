"""Every setting of a run, described: what ``msakit config show`` prints and the
"did you mean" of an unknown ``--set`` key.

A setting is a :class:`~msakit.config.RunConfig` field or one of the model's
:class:`~msakit.config.model_config.ModelConfig` fields, both declared with
:func:`~msakit.config.model_config.hp`: the documentation, type, range or choices and default
come from that declaration, the value from a configuration (a preset's, with the data set's
values). ``lr`` and ``weight_decay`` are listed per parameter group (``lr.text``, ...), as
``--set`` takes them. The keys that ``--set`` refuses (the run's identity and the settings that
have a flag of their own, :data:`msakit.config.FLAG_KEYS`) are not listed.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from msakit.config.model_config import ModelConfig

GROUP_KEYS = ("lr", "weight_decay", "missing_rate")
"""The run settings that are one value per key (a parameter group, a modality: the keys of
:data:`msakit.config.KEYED`)."""
MMSA_NAMES = {
    "learning_rate": "lr.*",
    "learning_rate_bert": "lr.text",
    "learning_rate_text": "lr.text",
    "learning_rate_audio": "lr.audio",
    "learning_rate_video": "lr.vision",
    "learning_rate_vision": "lr.vision",
    "learning_rate_other": "lr.other",
    "weight_decay_bert": "weight_decay.text",
    "weight_decay_text": "weight_decay.text",
    "weight_decay_audio": "weight_decay.audio",
    "weight_decay_video": "weight_decay.vision",
    "weight_decay_vision": "weight_decay.vision",
    "weight_decay_other": "weight_decay.other",
    "hidden_dims": "*hidden*",
    "hidden_dim": "*hidden*",
    "dropouts": "*dropout*",
    "num_epochs": "epochs",
    "max_epochs": "epochs",
    "update_epochs": "accumulate",
    "patience": "early_stop",
    "early_stopping": "early_stop",
    "lr_scheduler": "schedule",
    "scheduler": "schedule",
    "post_fusion_dim": "*fusion*",
    "post_fusion_dropout": "*dropout*",
}
"""MMSA's configuration names (``config_regression.json``) -> the msakit keys they correspond
to (a pattern: ``lr.*`` is every group's learning rate)."""


@dataclass(frozen=True)
class Setting:
    """One ``--set`` key: its documentation, type, range or choices, default and value."""

    key: str
    doc: str
    type: str
    range: str
    default: Any
    value: Any
    model: bool  # a model hyperparameter (``model:`` in config.yaml), else a run setting


def settings(config: Any, refused: typing.Collection[str] = ()) -> list[Setting]:
    """Every setting of ``config`` (a RunConfig), run settings first, then the model's; the
    keys in ``refused`` (and the run's identity) left out."""
    hints = typing.get_type_hints(type(config))
    listed = []
    for f in dataclasses.fields(config):
        if "doc" not in f.metadata or f.name in (*refused, "preset", "model"):
            continue
        value, default = getattr(config, f.name), _default(f)
        if f.name in GROUP_KEYS:
            listed += [_setting(f"{f.name}.{g}", f, hints[f.name].__args__[1],
                                default=default[g], value=v) for g, v in value.items()]
        else:
            listed.append(_setting(f.name, f, hints[f.name], default=default, value=value))
    model: ModelConfig = config.model
    model_hints = typing.get_type_hints(type(model))
    listed += [dataclasses.replace(_setting(f.name, f, model_hints[f.name], default=_default(f),
                                            value=getattr(model, f.name)), model=True)
               for f in dataclasses.fields(model)]
    return listed


def _setting(key: str, f: dataclasses.Field, kind: Any, *, default: Any, value: Any) -> Setting:
    return Setting(key=key, doc=" ".join(f.metadata.get("doc", "").split()), type=_type(kind),
                   range=value_range(f.metadata), default=default, value=value, model=False)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    # every setting has a default or a factory (typeshed cannot narrow MISSING away)
    return f.default_factory()  # type: ignore[operator]


def _type(kind: Any) -> str:
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")


def value_range(meta: Any) -> str:
    """An :func:`hp` declaration's choices (``a|b``) or bounds (``>= 0``, ``> 0``, ``< 1``)."""
    if meta.get("choices"):
        return "|".join(map(str, meta["choices"]))
    parts = []
    if meta.get("low") is not None:
        parts.append(f">= {meta['low']:g}")
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']:g}")
    if meta.get("high") is not None:
        parts.append(f"< {meta['high']:g}")
    return ", ".join(parts)


def suggestions(key: str, valid: typing.Collection[str]) -> list[str]:
    """The keys of ``valid`` that an unknown ``--set key`` may have meant: MMSA's name for them
    (:data:`MMSA_NAMES`), then close spellings (:func:`difflib.get_close_matches`)."""
    found: list[str] = []
    pattern = MMSA_NAMES.get(key.lower())
    if pattern is not None:
        found += sorted(k for k in valid if fnmatch.fnmatchcase(k, pattern))
    found += difflib.get_close_matches(key, sorted(valid), n=4, cutoff=0.6)
    return list(dict.fromkeys(found))


# --------------------------------------------------------------------------- output
def _plain(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def as_table(listed: list[Setting], preset: str) -> str:
    """Aligned columns (key, type, range, default, the preset's value), each setting's
    documentation on the line below it."""
    rows = [("key", "type", "range", "default", preset)]
    rows += [(s.key, s.type, s.range, _plain(s.default), _plain(s.value)) for s in listed]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                     + "  " + row[4])
        if i == 0:
            continue
        setting = listed[i - 1]
        if i > 1 and setting.model and not listed[i - 2].model:
            lines.insert(-1, "model hyperparameters:")
        lines.append(f"    {setting.doc}")
    return "\n".join(lines) + "\n"


def as_yaml(config: Any, listed: list[Setting]) -> str:
    """``config`` as a ``config.yaml`` that ``train --config`` reads, each setting preceded by
    a comment with its documentation, type, range and default."""
    saved = config.to_dict()
    by_key = {s.key: s for s in listed if not s.model}
    of_model = {s.key: s for s in listed if s.model}  # a model may reuse a run setting's name
    lines = ["# msakit train --config FILE --data FEATURES (--set and flags override it)"]
    for key, value in saved.items():
        if value is None and key in ("data", "init_from", "dataset_spec"):
            continue
        if key == "model":
            lines.append("model:")
            for name, item in value.items():
                lines += _commented(of_model.get(name), {name: item}, indent="  ")
            continue
        if key in GROUP_KEYS:
            lines.append(f"# {by_key[f'{key}.text'].doc} ({by_key[f'{key}.text'].range})")
            lines += yaml.safe_dump({key: value}, sort_keys=False).splitlines()
            continue
        lines += _commented(by_key.get(key), {key: value}, indent="")
    return "\n".join(lines) + "\n"


def _commented(setting: Setting | None, entry: dict[str, Any], indent: str) -> list[str]:
    text = yaml.safe_dump(entry, sort_keys=False, default_flow_style=False, width=1000)
    lines = [indent + line for line in text.splitlines()]
    if setting is None:
        return lines
    about = "; ".join(p for p in (setting.type, setting.range,
                                  f"default {_plain(setting.default)}") if p)
    return [f"{indent}# {setting.doc} ({about})", *lines]
