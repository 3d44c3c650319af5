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
from typing import Any

from msakit.config import GROUPS, RunConfig
from msakit.core.errors import MsakitError

DEFAULT_PRESET = "paper"


def apply_preset_entry(
    config: RunConfig, entry: dict[str, dict[str, Any]], where: str = "preset"
) -> RunConfig:
    """``config`` with a preset entry ``{"run": {field: value}, "model": {key: value}}`` applied.

    Any RunConfig field may be set; ``lr`` and ``weight_decay`` are merged group by group (an
    entry names only the groups it changes). Model keys must be hyperparameters the model has.
    An unknown name is an error, so a preset cannot silently set nothing.
    """
    data = config.to_dict()
    for key, value in (entry.get("run") or {}).items():
        if key in ("lr", "weight_decay"):
            unknown = set(value) - set(GROUPS)
            if unknown:
                raise MsakitError(f"{where}: unknown {key} group(s) {', '.join(sorted(unknown))}")
            data[key] = {**data[key], **{g: float(v) for g, v in value.items()}}
        elif key in data and key not in (
            "model", "model_name", "dataset", "dataset_spec", "preset"
        ):
            data[key] = copy.deepcopy(value)
        else:
            raise MsakitError(f"{where}: {key!r} is not a run setting")
    for key, value in (entry.get("model") or {}).items():
        if key not in data["model"]:
            raise MsakitError(f"{where}: {config.model_name} has no hyperparameter {key!r}")
        data["model"][key] = copy.deepcopy(value)
    return RunConfig.from_dict(data)
