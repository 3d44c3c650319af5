"""``msakit train --config RUN/config.yaml``: rerun a saved configuration.

A run folder's ``config.yaml`` (:func:`msakit.training.inputs.write_run_config`) records the
model, the data set, the named preset and every resolved setting. :func:`load_run_config`
rebuilds that :class:`~msakit.config.RunConfig` the way the run was built: the named preset of
(model, dataset), then every saved setting applied as a ``--set`` would be, so each value is
checked by name, type and range against what this msakit knows. The command line then applies
its flags and ``--set`` values on top (:func:`msakit.api.build_config` with ``base``). The
content identity of the data the run trained on (``data``) is kept: ``train`` refuses a
``--data`` file of other content (:func:`msakit.api.train`).

A file that cannot be read, is not YAML, or is not an msakit configuration (another tool's
YAML, keys this msakit does not know, values of the wrong type) is one
:class:`~msakit.core.errors.MsakitError` line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, cast

from msakit.config import KEYED, RunConfig, apply_overrides
from msakit.config.datasets import resolve_spec
from msakit.core.errors import MsakitError
from msakit.core.safe_yaml import read_yaml
from msakit.data.identity import check_identity
from msakit.models.registry import preset as named_preset

IDENTITY = ("model_name", "dataset", "preset")
"""What a config.yaml says the run is; a flag may repeat it, not change it."""
FLAGS = {"model_name": "--model", "dataset": "--dataset", "preset": "--preset"}


def config_path(path: str | os.PathLike) -> Path:
    """``path``, or ``path/config.yaml`` when ``path`` is a run folder."""
    path = Path(path)
    return path / "config.yaml" if path.is_dir() else path


def load_run_config(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    dataset: str | None = None,
    preset: str | None = None,
) -> RunConfig:
    """The configuration saved in ``path`` (a ``config.yaml`` or the run folder holding it).

    ``model``, ``dataset`` and ``preset`` (the command line's flags, when given) must agree
    with the file: the saved settings belong to its model, data set and preset.
    """
    path = config_path(path)
    saved = _read(path)
    identity = _identity(saved, path, {"model_name": model, "dataset": dataset,
                                       "preset": preset})
    seeds = saved.get("seeds")
    init_from = saved.get("init_from")
    try:
        spec = resolve_spec(identity["dataset"], saved.get("dataset_spec"))
        # the preset, then the saved settings as one layer, checked once (apply_overrides)
        config = named_preset(identity["model_name"], spec, identity["preset"], check=False)
        if init_from is not None and not isinstance(init_from, str):
            raise MsakitError(f"init_from: expected a checkpoint path, got {init_from!r}")
        flags: dict[str, Any] = {"init_from": init_from}  # its own flag (--init-from), as seeds
        if saved.get("data") is not None:  # what the run trained on: --data must hold it
            flags["data"] = check_identity(saved["data"], str(path))
        if seeds is not None:
            if not isinstance(seeds, list):
                raise MsakitError(f"seeds: expected a list of integers, got {seeds!r}")
            flags["seeds"] = seeds
        config = apply_overrides(dataclasses.replace(config, **flags), _settings(saved, path))
    except MsakitError as exc:
        raise MsakitError(f"{path}: {str(exc).removeprefix('--set ')}") from None
    return config


def _read(path: Path) -> dict[str, Any]:
    import yaml


    if not path.exists():
        raise MsakitError(f"--config {path}: no such file")
    try:
        saved = read_yaml(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise MsakitError(f"--config {path}: cannot read it ({reason})") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise MsakitError(f"--config {path}: not valid YAML ({problem})") from None
    if isinstance(saved, dict) and "study" in saved and isinstance(saved.get("config"), dict):
        saved = saved["config"]  # tune's best.yaml: the best trial's full configuration
    if not isinstance(saved, dict) or "model_name" not in saved or "dataset" not in saved:
        raise MsakitError(
            f"--config {path}: not an msakit config.yaml (no model_name and dataset; give the "
            "config.yaml that 'msakit train' wrote into a run folder, or tune's best.yaml)"
        )
    return saved


def _identity(saved: dict[str, Any], path: Path, flags: dict[str, str | None]) -> dict[str, str]:
    identity = {key: saved.get(key, "paper" if key == "preset" else None) for key in IDENTITY}
    for key, value in identity.items():
        if not isinstance(value, str):
            raise MsakitError(f"--config {path}: {key} is {value!r}, not a name")
        given = flags[key]
        if given is not None and given != value:
            raise MsakitError(
                f"--config {path}: the run used {FLAGS[key]} {value}, not {given}; its settings "
                f"are those of {value} (leave out {FLAGS[key]}, or train from the preset)"
            )
    return cast("dict[str, str]", identity)  # every value checked above


def _settings(saved: dict[str, Any], path: Path) -> dict[str, str]:
    """The saved settings under their ``--set`` names (``lr.text``, ``gamma``, ...), without
    the run's identity, seeds, ``init_from`` and ``data``, each value written as YAML (a
    string stays a string: ``amp: 'off'``, not the YAML 1.1 boolean a bare ``off`` reads
    as)."""
    import yaml

    settings: dict[str, Any] = {}
    for key, value in saved.items():
        # the data set's spec shapes the preset; init_from is a flag of its own
        if key in (*IDENTITY, "seeds", "dataset_spec", "init_from", "data", "provenance"):
            continue
        if key == "model" or key in KEYED:
            if not isinstance(value, dict):
                raise MsakitError(f"--config {path}: {key} is {value!r}, not a mapping")
            prefix = f"{key}."  # model.KEY: never mistaken for a run setting of that name
            settings.update({f"{prefix}{k}": v for k, v in value.items()})
        else:
            settings[key] = value
    return {key: yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...")
            .strip() for key, value in settings.items()}
