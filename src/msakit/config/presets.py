"""Named presets: how a preset entry applies to a run configuration.

Each model declares its presets in its own file (``msakit/models/<name>.py``, the ``presets``
and ``named_presets`` of its :class:`~msakit.models.registry.ModelSpec`); the ``paper`` preset
of (model, dataset) is the model's defaults with that data set's entry applied, and any other
named preset (``--preset authors``) applies its entry on top. ``preset()`` in
:mod:`msakit.models.registry` builds the RunConfig; this module holds the one rule for applying
an entry. Values marked "msakit's choice" in the model files are not in the paper (nor, for
CLGSI, in the authors' config); docs/readings.md lists every one of them with the reason and
the switch.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from msakit.config import DEFAULT_PRESET, GROUPS, KEYED, RunConfig, _setting_types, _typed_setting
from msakit.core.errors import MsakitError

__all__ = ["DEFAULT_PRESET", "apply_preset_entry"]
FIXED = ("model", "model_name", "dataset", "dataset_spec", "preset")
"""Run settings a preset entry may not set (the run's identity; the model's own part)."""


def apply_preset_entry(
    config: RunConfig, entry: dict[str, dict[str, Any]], where: str = "preset"
) -> RunConfig:
    """``config`` with a preset entry ``{"run": {field: value}, "model": {key: value}}`` applied
    as one typed layer (:func:`dataclasses.replace` on the run settings and on the model's
    ModelConfig), unchecked: the finished configuration is checked once
    (:meth:`RunConfig.check`).

    Any RunConfig field may be set; ``lr``, ``weight_decay`` and ``missing_rate`` are merged
    key by key (:data:`msakit.config.KEYED`: an entry names only the keys it changes). Model
    keys must be hyperparameters the model has. An unknown name is an error, so a preset
    cannot silently set nothing.
    """
    hints = _setting_types(type(config))  # type: ignore[arg-type]  # classes are hashable
    run: dict[str, Any] = {}
    for key, value in (entry.get("run") or {}).items():
        if key in KEYED:
            unknown = set(value) - set(KEYED[key])
            if unknown:
                what = "group(s)" if KEYED[key] is GROUPS else "key(s)"
                raise MsakitError(f"{where}: unknown {key} {what} {', '.join(sorted(unknown))}")
            value = {**getattr(config, key), **{g: float(v) for g, v in value.items()}}
        elif key not in hints or key in FIXED:
            raise MsakitError(f"{where}: {key!r} is not a run setting")
        run[key] = _typed_setting(key, copy.deepcopy(value), hints[key])
    model = entry.get("model") or {}
    known = set(config.model.to_dict())
    for key in model:
        if key not in known:
            raise MsakitError(f"{where}: {config.model_name} has no hyperparameter {key!r}")
    return dataclasses.replace(config, **run, model=config.model.updated(copy.deepcopy(model)))
