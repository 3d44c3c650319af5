"""CLGSI's ``authors`` preset: what the authors' released code (AZYoung233/CLGSI) runs, as
differences from the ``paper`` preset of each data set.

``{dataset: {"run": {RunConfig field: value}, "model": {model key: value}}}``; ``lr`` and
``weight_decay`` entries name only the groups they change. ``--preset authors`` applies them on
top of the paper preset (:func:`msakit.config.presets.preset`).

* ``sampler``: the released code draws plain shuffled batches.
* ``variant``: the released ``contrastive_loss`` (see
  :mod:`msakit.losses.intensity_contrastive`), the loss γ and τ of the released config were
  tuned with; ``label_scale`` 3.0 is the scale that loss divides labels by on every data set.
* MOSI learning rates: the released config has audio 5e-3 and video 1e-3, where Table 7 of the
  paper has them the other way round.
"""

from __future__ import annotations

from typing import Any

_COMMON_RUN: dict[str, Any] = {"sampler": "random"}
_COMMON_MODEL: dict[str, Any] = {"variant": "official", "label_scale": 3.0}

CLGSI_AUTHORS: dict[str, dict[str, dict[str, Any]]] = {
    "mosi": {
        "run": {**_COMMON_RUN, "lr": {"audio": 5e-3, "vision": 1e-3}},
        "model": {**_COMMON_MODEL},
    },
    "mosei": {"run": {**_COMMON_RUN}, "model": {**_COMMON_MODEL}},
    "sims": {"run": {**_COMMON_RUN}, "model": {**_COMMON_MODEL}},
}
