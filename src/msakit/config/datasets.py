"""Data sets as data: one :class:`DatasetSpec` per data set, and the registry of named ones.

A spec says what msakit needs to know about a data set: its labels (range and the scale H that
maps them to [-1, 1]), which of MMSA's metric families scores it, its language and default text
encoder, the shapes of its standard MMSA feature file, the named data set whose model presets it
starts from, and the sentiment intervals plots colour by. Metrics, reports, plots, the synthetic
generator, config validation, the data checks and the command line read these specs; nothing
else names a data set. A new data set is one entry in :data:`DATASETS`.

``custom`` is not in the registry: ``--dataset custom`` builds a spec from a YAML file
(:func:`read_spec_file`) or from ``--label-range A B`` (:func:`custom_spec`); it travels in the
run's ``config.yaml`` and checkpoints (:meth:`DatasetSpec.to_dict`), so evaluate, predict, report
and plot need no file.

This module is the bottom layer: it imports nothing from msakit but the error type.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.safe_yaml import read_yaml

MOSI_FAMILY = "mosi"
"""MMSA's MOSI/MOSEI regression metrics: Has0/Non0 Acc-2 and F1, Acc-5, Acc-7, MAE, Corr."""
SIMS_FAMILY = "sims"
"""MMSA's SIMS regression metrics (also SIMS v2): Acc-2/3/5 over fixed bins, F1, MAE, Corr."""
METRIC_FAMILIES = (MOSI_FAMILY, SIMS_FAMILY)
CUSTOM = "custom"
"""``--dataset custom``: a spec from ``--dataset-spec FILE.yaml`` or ``--label-range A B``."""
LANGUAGES = ("en", "zh")

# SIMS class edges (left-open, right-closed), MMSA's ms_2 / ms_3 / ms_5 in metricsTop.py.
SIMS_EDGES = {
    2: (-1.01, 0.0, 1.01),
    3: (-1.01, -0.1, 0.1, 1.01),
    5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),
}
SIMS_INTERVALS = ("negative", "weakly neg.", "neutral", "weakly pos.", "positive")


def bin_index(x: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Index of the left-open, right-closed bin ``(edges[k], edges[k+1]]`` of each value
    (float32 edges, as MMSA compares them); values outside every bin get 0."""
    out = np.zeros(x.shape, dtype=np.int64)
    for k in range(len(edges) - 1):
        lo, hi = np.float32(edges[k]), np.float32(edges[k + 1])
        out[(x > lo) & (x <= hi)] = k
    return out


@dataclass(frozen=True)
class FileShape:
    """Sizes of a data set's standard MMSA feature file."""

    text_len: int  # Lt
    audio_len: int  # La
    audio_dim: int  # Da
    vision_len: int  # Lv
    vision_dim: int  # Dv
    split_sizes: tuple[int, int, int]  # train, valid, test
    vocab_size: int  # of the tokenizer that wrote text_bert


@dataclass(frozen=True)
class DatasetSpec:
    """Everything msakit knows about one data set (see the module docstring)."""

    name: str
    title: str
    label_range: tuple[float, float]
    metric_family: str
    language: str
    text_encoder: str
    """The BERT whose vocabulary wrote the standard file's ``text_bert`` ids."""
    presets_from: str
    """The named data set whose per-data-set model presets this one starts from."""
    shape: FileShape | None = None
    """The standard file's shapes (None: no standard file, e.g. custom data)."""
    unimodal_labels: bool = False
    """Whether the standard file carries ``regression_labels_T/A/V``."""
    label_scale: float = 0.0
    """H, the labels' scale (y / H lies in [-1, 1]); 0 means max(|low|, |high|)."""

    def __post_init__(self) -> None:
        if not self.label_scale:
            object.__setattr__(self, "label_scale", max(abs(v) for v in self.label_range))

    @property
    def is_custom(self) -> bool:
        return self.name == CUSTOM

    def intervals(self, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Each label's sentiment interval (index) and the intervals' names, low to high.

        MOSI family: the rounded label clipped to the rounded label range (MOSI/MOSEI: the seven
        Acc-7 classes "-3" ... "+3"). SIMS family: MMSA's five Acc-5 classes.
        """
        y = np.asarray(labels, dtype=np.float32).reshape(-1)
        if self.metric_family == SIMS_FAMILY:
            return bin_index(np.clip(y, -1.0, 1.0), SIMS_EDGES[5]), list(SIMS_INTERVALS)
        low, high = (round(v) for v in self.label_range)
        classes = np.round(np.clip(y, low, high)).astype(np.int64) - low
        return classes, [f"{k:+d}" if k else "0" for k in range(low, high + 1)]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML/JSON types (what config.yaml and checkpoints hold)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "shape"}
        out["label_range"] = [float(v) for v in self.label_range]
        return out

    def spec_file(self) -> dict[str, Any]:
        """A custom spec as a ``--dataset-spec`` file holds it (:data:`SPEC_KEYS`)."""
        return {k: v for k, v in self.to_dict().items() if k in SPEC_KEYS}


DATASETS: dict[str, DatasetSpec] = {
    "mosi": DatasetSpec(
        name="mosi", title="MOSI", label_range=(-3.0, 3.0), metric_family=MOSI_FAMILY,
        language="en", text_encoder="bert-base-uncased", presets_from="mosi",
        shape=FileShape(50, 500, 5, 375, 20, (1284, 229, 686), 30522),
    ),
    "mosei": DatasetSpec(
        name="mosei", title="MOSEI", label_range=(-3.0, 3.0), metric_family=MOSI_FAMILY,
        language="en", text_encoder="bert-base-uncased", presets_from="mosei",
        shape=FileShape(50, 500, 74, 375, 35, (16326, 1871, 4659), 30522),
    ),
    "sims": DatasetSpec(
        name="sims", title="SIMS", label_range=(-1.0, 1.0), metric_family=SIMS_FAMILY,
        language="zh", text_encoder="bert-base-chinese", presets_from="sims",
        shape=FileShape(39, 400, 33, 55, 709, (1368, 456, 457), 21128), unimodal_labels=True,
    ),
    # CH-SIMS v2(s), the supervised part (docs/readings.md, "CH-SIMS v2"): BERT-Chinese text,
    # eGeMAPS audio (25), OpenFace vision (177); 2722/647/1034 clips; MMSA scores it with the
    # SIMS metrics and loads its unimodal labels. Models whose MMSA repository config has no
    # simsv2 entry take SIMS's presets (docs/readings.md, "SIMS v2 presets").
    "simsv2": DatasetSpec(
        name="simsv2", title="SIMS v2", label_range=(-1.0, 1.0), metric_family=SIMS_FAMILY,
        language="zh", text_encoder="bert-base-chinese", presets_from="sims",
        shape=FileShape(50, 925, 25, 232, 177, (2722, 647, 1034), 21128), unimodal_labels=True,
    ),
}


def dataset_names() -> list[str]:
    """The named data sets, in registry order (the command line's ``--dataset`` choices, with
    ``custom``)."""
    return list(DATASETS)


def synthetic_names() -> list[str]:
    """The named data sets with a standard file, whose shapes ``msakit synth --like`` copies."""
    return [name for name, spec in DATASETS.items() if spec.shape is not None]


def dataset_spec(name: str | DatasetSpec) -> DatasetSpec:
    """The spec of a named data set (a spec is returned as it is)."""
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[str(name).lower()]
    except KeyError:
        hint = f" ({CUSTOM} needs --dataset-spec or --label-range)" if name == CUSTOM else ""
        raise MsakitError(
            f"unknown dataset {name!r}; choose {', '.join(dataset_names())} or {CUSTOM}{hint}"
        ) from None


def preset_source(dataset: str | DatasetSpec, available: Any) -> str:
    """The data set whose per-data-set presets ``dataset`` (a name or a spec) takes from a
    model whose presets are for the data sets ``available``: its own when the model has them,
    else its spec's ``presets_from`` (SIMS v2 without a preset of its own: SIMS's)."""
    spec = dataset_spec(dataset)
    return spec.name if spec.name in available else spec.presets_from


def resolve_spec(name: str, custom: dict[str, Any] | None = None) -> DatasetSpec:
    """The spec of a run's ``dataset`` field; ``custom`` is its recorded custom spec."""
    if name == CUSTOM:
        if not isinstance(custom, dict):
            raise MsakitError(
                "--dataset custom needs a data set spec (--dataset-spec FILE.yaml or "
                "--label-range A B)"
            )
        return spec_from_dict(custom, "the custom data set spec")
    if custom is not None:
        raise MsakitError(f"a data set spec is only for --dataset {CUSTOM}, not {name!r}")
    return dataset_spec(name)


# --------------------------------------------------------------------------- custom data sets
SPEC_KEYS = ("label_range", "metric_family", "language", "text_encoder", "title", "label_scale")
"""What a ``--dataset-spec`` file may hold (``label_range`` is required)."""


def family_for_range(label_range: tuple[float, float]) -> str:
    """The metric family of a label range: SIMS's when every label lies in [-1, 1] (MMSA's SIMS
    metrics clip to [-1, 1] and bin at ±0.1, ±0.7), MOSI's otherwise (Has0/Non0 by sign,
    Acc-7/Acc-5 over rounded labels clipped to [-3, 3] / [-2, 2])."""
    return SIMS_FAMILY if max(abs(v) for v in label_range) <= 1.0 else MOSI_FAMILY


def custom_spec(
    label_range: tuple[float, float] | list[float],
    *,
    metric_family: str | None = None,
    language: str = "en",
    text_encoder: str | None = None,
    title: str = "Custom",
    label_scale: float = 0.0,
) -> DatasetSpec:
    """A custom data set's spec, validated (one :class:`MsakitError` line per problem).

    ``metric_family`` defaults to :func:`family_for_range`; ``text_encoder`` to the papers'
    BERT of ``language`` (bert-base-uncased, bert-base-chinese); the model presets are those of
    the first named data set of the metric family (MOSI or SIMS).
    """
    where = "the custom data set spec"
    return spec_from_dict(
        {"label_range": label_range, "metric_family": metric_family, "language": language,
         "text_encoder": text_encoder, "title": title, "label_scale": label_scale},
        where,
    )


def _check_range(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise MsakitError(f"{where}: label_range must be two numbers [LOW, HIGH], got {value!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise MsakitError(f"{where}: label_range must be two numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise MsakitError(f"{where}: label_range must be finite, got {value!r}")
    if not low < 0 < high:
        raise MsakitError(
            f"{where}: label_range [{low:g}, {high:g}] must hold 0 inside (LOW < 0 < HIGH): "
            "MMSA's metrics read a label's sign as its polarity; shift the labels so that 0 is "
            "neutral"
        )
    return low, high


def _check_choice(data: dict[str, Any], key: str, choices: tuple[str, ...], where: str) -> None:
    if data[key] not in choices:
        raise MsakitError(f"{where}: {key} must be one of {', '.join(choices)}, got "
                          f"{data[key]!r}")


def spec_from_dict(data: Any, where: str) -> DatasetSpec:
    """A custom spec from a mapping (a spec file's content, or a run's recorded spec)."""
    if not isinstance(data, dict):
        raise MsakitError(f"{where}: expected a mapping of {', '.join(SPEC_KEYS)}, got "
                          f"{type(data).__name__}")
    data = {k: v for k, v in data.items() if v is not None and k not in ("name", "presets_from",
                                                                           "unimodal_labels")}
    unknown = sorted(map(str, set(data) - set(SPEC_KEYS)))
    if unknown:
        raise MsakitError(f"{where}: unknown key(s) {', '.join(unknown)}; a spec holds "
                          f"{', '.join(SPEC_KEYS)}")
    if "label_range" not in data:
        raise MsakitError(f"{where}: label_range is missing (e.g. label_range: [-3, 3])")
    label_range = _check_range(data["label_range"], where)
    data.setdefault("metric_family", family_for_range(label_range))
    data.setdefault("language", "en")
    _check_choice(data, "metric_family", METRIC_FAMILIES, where)
    _check_choice(data, "language", LANGUAGES, where)
    for key in ("text_encoder", "title"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise MsakitError(f"{where}: {key} must be a non-empty string, got {data[key]!r}")
    scale = data.get("label_scale", 0.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
        scale == 0 or 0 < scale < math.inf
    ):
        raise MsakitError(f"{where}: label_scale must be a number > 0, got {scale!r}")
    family = data["metric_family"]
    default_encoder = next(s.text_encoder for s in DATASETS.values()
                           if s.language == data["language"])
    return DatasetSpec(
        name=CUSTOM, title=str(data.get("title", "Custom")), label_range=label_range,
        metric_family=family, language=data["language"],
        text_encoder=data.get("text_encoder", default_encoder),
        presets_from=next(n for n, s in DATASETS.items() if s.metric_family == family),
        label_scale=float(scale),
    )


def read_spec_file(path: str | os.PathLike[str]) -> DatasetSpec:
    """A custom spec from a YAML file (keys: :data:`SPEC_KEYS`), validated."""
    import yaml


    p = os.fspath(path)
    try:
        data = read_yaml(p)
    except FileNotFoundError:
        raise MsakitError(f"--dataset-spec {p}: no such file") from None
    except IsADirectoryError:
        raise MsakitError(f"--dataset-spec {p}: is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MsakitError(f"--dataset-spec {p}: cannot read it ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise MsakitError(f"--dataset-spec {p}: not valid YAML ({problem})") from None
    return spec_from_dict(data, f"--dataset-spec {p}")
