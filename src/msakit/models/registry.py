"""One registry: a model's name -> everything msakit knows about the model (:class:`ModelSpec`).

A model is one file in ``msakit/models/`` that ends with ``register_model(ModelSpec(...))``:
its builder, its typed hyperparameters (a :class:`~msakit.config.model_config.ModelConfig`), its
per-dataset presets, its named presets, its Optuna search space and its weight importers. The
command line's ``--model`` choices, ``msakit tune``, ``report`` and ``plot`` read this registry;
nothing else names a model. Adding a built-in model is its file plus its name in
:data:`BUILTIN`; a model registered from user code (a test, a notebook) is found the same way.

Plugins: an installed distribution that declares entry points in the :data:`PLUGIN_GROUP`
group (``[project.entry-points."msakit.models"] NAME = "module"`` in its pyproject.toml) has
each entry point's module imported with the built-in models (once per process, on the
registry's first use); the module calls :func:`register_model`, and its models are then
choices of every command (``train``, ``evaluate``, ``predict``, ``tune``, ``report``, ...).
A plugin that fails to load is one ``warning:`` line on stderr naming its distribution, and
the other models stay available.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from torch import nn

from msakit.config import RunConfig, with_dataset
from msakit.config.datasets import DatasetSpec, dataset_spec, preset_source
from msakit.config.model_config import ModelConfig, add_config_finder
from msakit.config.presets import DEFAULT_PRESET, apply_preset_entry
from msakit.core.errors import MsakitError
from msakit.models.base import Dims, MSAModel

BUILTIN = ("clgsi", "conki", "tfn", "lmf", "mult", "misa", "self_mm", "mmim", "lf_dnn",
           "ef_lstm", "mfn", "graph_mfn", "mtfn", "mlmf", "mlf_dnn", "bert_mag", "mfm", "mctn",
           "tfr_net", "tetfn", "cenet", "almt")
"""Modules of ``msakit.models`` that register the built-in models (imported on first use)."""

PLUGIN_GROUP = "msakit.models"
"""The entry-point group of model plugins: each entry point names a module that registers
models (:func:`register_model`) when imported."""

DEMO_MODEL = "clgsi"
"""The model ``msakit demo`` trains on synthetic data."""

PresetEntry = dict[str, Any]
"""``{"run": {RunConfig field: value}, "model": {hyperparameter: value}}``, optionally with
``"note": str``, one line that ``msakit train`` prints before training (e.g. that a named
preset's entry for this data set is msakit's completion, not its source's)."""


@dataclass(frozen=True)
class AdapterStage:
    """A model's stage that pretrains knowledge adapters before the main training (ConKI's
    stage 1), declared in its :class:`ModelSpec` and run by the generic
    :func:`msakit.training.stages.pretrain_adapters` (``msakit pretrain-adapters``); stage 2 is
    ``msakit train --adapters FILE``, which calls :attr:`read` and :attr:`install`."""

    config: Callable[..., tuple[RunConfig, int]]
    """``config(dataset, *, text_encoder, epochs, batch, overrides, preset_name) -> (the stage's
    RunConfig, its warm-up in epochs)``."""
    prepare: Callable[[MSAModel], None]
    """Called on the stage's freshly built model before training (what it freezes)."""
    keep: Callable[[str], bool]
    """Which state-dict entries the stage's ``best.pt`` keeps."""
    content: Callable[..., dict[str, Any]]
    """``content(best, *, net, extra, fingerprint)``: the adapters file from the best
    checkpoint, the checkpoint's ``extra`` and the text encoder's fingerprint."""
    read: Callable[..., dict[str, Any]]
    """``read(path, config, model, encoder)``: the checked adapters file's state to install."""
    install: Callable[[MSAModel, dict[str, Any]], None]
    """Put what :attr:`read` returned into a stage-2 model."""
    fingerprint: Callable[[nn.Module], str]
    """The text encoder's fingerprint the file records (the same encoder in both stages)."""


@dataclass(frozen=True)
class ModelPlot:
    """A figure only some models have (``msakit plot NAME``), declared in their
    :class:`ModelSpec`; :func:`msakit.reporting.plots.plot_model_figure` draws it."""

    help: str
    """The sub-command's help line."""
    draw: Callable[..., str]
    """``draw(ax, config, **options) -> title``: draws on a Matplotlib axes for ``config`` (the
    model's typed config from a checkpoint, or None for the defaults) and the options."""
    options: tuple[tuple[str, str], ...] = ()
    """(flag, help) of the figure's number options (``--threshold``), passed to :attr:`draw`
    by their names without the dashes (None when not given)."""
    checkpoint_help: str = "take the settings from this checkpoint"
    size: tuple[float, float] = (6.4, 4.4)


@dataclass(frozen=True)
class ModelSpec:
    """Everything about one model, declared once in the model's own file."""

    name: str
    """The name users type (``--model NAME``); MMSA's name for MMSA's models."""
    config: type[ModelConfig]
    """The typed hyperparameters; their defaults are the paper's values."""
    build: Callable[[Any, Dims, nn.Module | None], MSAModel]
    """``build(config, dims, text_encoder) -> model``, ``config`` an instance of ``config``."""
    presets: dict[str, PresetEntry]
    """The ``paper`` preset: per data set, the run settings and the hyperparameters that differ
    from the defaults. A data set without an entry is not offered for this model."""
    title: str = ""
    """How tables and ``--help`` name the model (e.g. ``Self-MM``)."""
    paper: str = ""
    """The paper that defines the model."""
    named_presets: dict[str, dict[str, PresetEntry]] = field(default_factory=dict)
    """Other named presets (``--preset NAME``): per data set, the changes from ``paper``."""
    search_space: dict[str, tuple] = field(default_factory=dict)
    """Optuna: ``key -> ("float", low, high, log)`` / ``("int", low, high)`` /
    ``("choice", [values])``; keys are ``--set`` keys."""
    text_input: str = "encoder"
    """``encoder``: a Hugging Face text encoder reads the token ids (``text_bert``);
    ``features``: no text encoder, the file's precomputed ``text`` features."""
    imports: dict[str, Callable[..., dict[str, Any]]] = field(default_factory=dict)
    """Weight importers: source name (``msakit import-weights --from``) -> a function from the
    source's state dict to this model's state dict."""
    adapter_stage: AdapterStage | None = None
    """The stage that pretrains the model's knowledge adapters (``--adapters`` applies only to
    a model that declares one)."""
    plots: dict[str, ModelPlot] = field(default_factory=dict)
    """Figures of this model's own (``msakit plot NAME``), e.g. a loss's weight function."""

    def preset_names(self) -> list[str]:
        return ["paper", *[n for n in self.named_presets if n != "paper"]]

    def datasets(self) -> list[str]:
        return list(self.presets)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model (or replace one of the same name); returns ``spec``."""
    if spec.config.model != spec.name:
        raise ValueError(
            f"{spec.config.__name__} is declared for model {spec.config.model!r}, not "
            f"{spec.name!r} (class {spec.config.__name__}(ModelConfig, model={spec.name!r}))"
        )
    _REGISTRY[spec.name] = spec
    return spec


def model_names() -> list[str]:
    """Every registered model, built-in ones first in :data:`BUILTIN` order."""
    _load_builtin()
    builtin = [n for n in BUILTIN if n in _REGISTRY]
    return builtin + sorted(n for n in _REGISTRY if n not in BUILTIN)


def model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; an unknown name is one error line listing the models."""
    _load_builtin()
    if name not in _REGISTRY:
        raise MsakitError(f"unknown model {name!r}; choose {', '.join(model_names())}")
    return _REGISTRY[name]


def create_model(
    name: str,
    model_config: dict[str, Any] | ModelConfig,
    dims: Dims,
    text_encoder: nn.Module | None,
) -> MSAModel:
    """Build model ``name`` from its hyperparameters, the data's dims and a text encoder.

    ``model_config`` is the model's typed config (a run's ``RunConfig.model``, checked with the
    run's configuration, :meth:`~msakit.config.RunConfig.check`) or a mapping, which is typed and
    checked here.

    The model is built with PyTorch's own dropouts and changes nothing outside itself; the
    fast CPU dropout is a training setting (``fast_dropout``), which the Trainer applies to
    the model it trains (:func:`~msakit.encoders.dropout.use_fast_dropout`)."""
    spec = model_spec(name)
    return spec.build(spec.config.from_dict(model_config), dims, text_encoder)


def adapter_models() -> list[str]:
    """The registered models that declare an adapter stage."""
    return [n for n in model_names() if model_spec(n).adapter_stage is not None]


def model_plots() -> dict[str, tuple[ModelSpec, ModelPlot]]:
    """Every figure a model declares: name -> (the first model declaring it, the figure)."""
    found: dict[str, tuple[ModelSpec, ModelPlot]] = {}
    for name in model_names():
        spec = model_spec(name)
        for figure, plot in spec.plots.items():
            found.setdefault(figure, (spec, plot))
    return found


_plugins_loaded = False


def _load_builtin() -> None:
    # Importing a model's file registers it; the plugins' modules come after the built-in ones.
    for module in BUILTIN:
        importlib.import_module(f"msakit.models.{module}")
    _load_plugins()


def _load_plugins() -> None:
    """Import every :data:`PLUGIN_GROUP` entry point's module, once per process; one that
    fails (a missing dependency, an error in its code, a model that does not register) is a
    ``warning:`` line naming the distribution, not the end of the command."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # first: a plugin that asks the registry does not load itself again
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code: one line
            dist = f"{point.dist.name} {point.dist.version}" if point.dist else "unknown"
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(f"warning: msakit model plugin {point.name!r} = {point.value!r} of "
                  f"distribution {dist} was not loaded ({type(exc).__name__}: {detail}); its "
                  "models are not available", file=sys.stderr, flush=True)


add_config_finder(_load_builtin)  # a run's model settings read by name find the built-in models


def preset_names() -> list[str]:
    """Every named preset some model has (the command line's ``--preset`` choices)."""
    names = ["paper"]
    for model in model_names():
        names += [n for n in _REGISTRY[model].preset_names() if n not in names]
    return names


def preset(
    model: str, dataset: str | DatasetSpec, name: str = DEFAULT_PRESET, *, check: bool = True
) -> RunConfig:
    """The named preset ``name`` of ``model`` on ``dataset`` (a name or a spec) as a fresh
    RunConfig, typed layers applied in order, checked once at the end (``check=False``: the
    caller applies more layers, e.g. ``--set``, and checks the result).

    ``paper``: the model's hyperparameter defaults with the data set's entry of the spec's
    ``presets`` applied (run settings and hyperparameters), then the data set's own settings
    (:func:`~msakit.config.with_dataset`: its label scale, a custom spec's text encoder); another
    name applies that named preset's entry on top
    (:func:`~msakit.config.presets.apply_preset_entry`). A data set without an entry of its own
    (SIMS v2, custom data) takes the entry of its spec's ``presets_from``
    (:func:`~msakit.config.datasets.preset_source`).
    """
    spec = model_spec(model)
    data = dataset_spec(dataset)
    source = preset_source(data, spec.presets)
    if source not in spec.presets:
        raise MsakitError(
            f"{model} has no preset for data set {data.name!r}; choose "
            f"{', '.join(spec.datasets())}"
        )
    if name not in spec.preset_names():
        raise MsakitError(
            f"{model} has no preset {name!r}; choose {', '.join(spec.preset_names())}"
        )
    config = RunConfig(model_name=model, dataset=data, model=spec.config(), preset=name)
    config = apply_preset_entry(config, spec.presets[source], f"{model} preset paper")
    config = with_dataset(config, data)
    if name != DEFAULT_PRESET:
        entry = _named_entry(spec, data, name)
        config = apply_preset_entry(config, entry, f"{model} preset {name}")
    if check:
        config.check()  # a preset's values pass the same checks as --set
    return config


def _named_entry(spec: ModelSpec, data: DatasetSpec, name: str) -> PresetEntry:
    """The entry of the named preset ``name`` for ``data``: the data set's own, else that of
    its spec's ``presets_from`` (a named preset need not repeat the paper preset's data sets),
    else none (the paper values under the preset's name)."""
    entries = spec.named_presets.get(name, {})
    return entries.get(preset_source(data, entries), {})


def preset_note(model: str, dataset: str | DatasetSpec, name: str) -> str | None:
    """The ``note`` line of the named preset ``name`` of ``model`` for ``dataset``, if any."""
    if name == DEFAULT_PRESET:
        return None
    return _named_entry(model_spec(model), dataset_spec(dataset), name).get("note")
