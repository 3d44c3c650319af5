"""Typed run configuration.

A :class:`RunConfig` holds the training settings every model shares (batch, learning rates and
weight decays per parameter group, schedule, early stopping, seeds...) and ``model``, the
model's own hyperparameters as a plain mapping (what ``config.yaml`` and checkpoints store),
whose types, ranges and documentation are the model's
:class:`~msakit.config.model_config.ModelConfig`. Presets live in each model's file (its
registry entry); ``--set key=value`` overrides either part by name, with the value's type
checked against the field's.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from msakit.config.datasets import DATASETS, DatasetSpec, dataset_spec, resolve_spec
from msakit.config.listing import suggestions
from msakit.config.model_config import ModelConfig, check_settings, config_class, hp
from msakit.core.errors import MsakitError
from msakit.core.safe_yaml import dump_yaml, load_yaml

__all__ = ["DATASETS", "RunConfig", "apply_overrides", "validate", "with_dataset"]
GROUPS = ("text", "audio", "vision", "other")
MISSING_MODALITIES = ("text", "audio", "vision")
"""The keys of ``missing_rate``: the modalities the missing-modality protocol drops from."""
KEYED = {"lr": GROUPS, "weight_decay": GROUPS, "missing_rate": MISSING_MODALITIES}
"""The run settings that hold one value per key (a parameter group, a modality), and their keys
(the settings :data:`msakit.config.listing.GROUP_KEYS` lists): ``--set lr=1e-3`` sets every
key's value, ``--set lr.text=1e-5`` one; a preset names only the keys it changes."""
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "linear", "constant", "plateau")
SAMPLERS = ("random", "bucket")
DEFAULT_PRESET = "paper"
"""The preset a run starts from unless ``--preset`` names another."""
SEED_LIMIT = 2**32
"""Seeds are in [0, 2^32): NumPy's legacy seeding takes no more."""


def groups(*, text: float, audio: float, vision: float, other: float) -> dict[str, float]:
    """A per-group setting (learning rate, weight decay) as RunConfig stores it, named by
    group: ``groups(text=5e-5, audio=1e-3, vision=5e-3, other=1e-2)``."""
    return {"text": text, "audio": audio, "vision": vision, "other": other}


DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)
"""MMSA's five seeds: both papers report means over several runs."""
RUN_FOLDER = "runs/msakit"
"""Where a training run is written unless ``--out`` (``out=``) names another folder."""
SWEEP_FOLDER = "sweeps/msakit"
"""Where ``msakit tune`` (:func:`msakit.tune.tune`) writes its trials and ``best.yaml`` unless
``--out`` (``out=``) names another folder."""

AMP_MODES = ("off", "bf16", "fp16")
"""Mixed precision: none, bf16 autocast, fp16 autocast with a gradient scaler (CUDA)."""


def amp_mode(amp: str, bf16: bool = False) -> str:
    """The run's mixed precision: ``amp``, or ``"bf16"`` for the older ``bf16=true``."""
    if amp not in AMP_MODES:
        raise MsakitError(f"amp must be {', '.join(AMP_MODES)}, got {amp!r}")
    if bf16 and amp == "fp16":
        raise MsakitError("bf16=true and amp=fp16 contradict each other; set amp only")
    return "bf16" if bf16 and amp == "off" else amp


def plain(obj: Any) -> Any:
    """A JSON round trip: only dicts, lists, strings, numbers, booleans and None remain, which
    is what a checkpoint read with ``torch.load(weights_only=True)`` may hold."""
    return json.loads(json.dumps(obj, default=str))


@dataclass
class RunConfig:
    """Everything needed to rebuild and retrain a run; saved beside every checkpoint.

    Every run setting is declared once, here, with :func:`hp` (its default, its documentation,
    its bounds or choices), as a model's hyperparameters are in its
    :class:`~msakit.config.model_config.ModelConfig`; :meth:`check` checks both with the same
    function (:func:`~msakit.config.model_config.check_settings`). A new run setting is one
    field declaration: ``--set``, config.yaml, checkpoints, ``--config`` and ``--resume`` pick
    it up. ``dataset`` is the data set's :class:`DatasetSpec` and ``model`` the model's typed
    hyperparameters (its ``ModelConfig`` instance); :meth:`to_dict` writes them as names and
    mappings (``dataset``, ``dataset_spec`` for a custom one, ``model``), the form config.yaml
    and checkpoints have always held, and :meth:`from_dict` reads that form back.
    """

    model_name: str
    dataset: DatasetSpec
    """The data set's spec (a name given here is looked up: :func:`dataset_spec`)."""
    preset: str = hp(DEFAULT_PRESET, "The named preset the run started from (``--preset``; "
                     "each model declares its own).")
    text_encoder: str | None = hp(None, "Hub name, folder or ``minilm``; the presets set the "
                                  "papers' encoder of the data set.")
    batch_size: int = hp(64, "Samples per batch (over all ranks).", low=1)
    epochs: int = hp(50, "Upper bound on epochs and the horizon of the warm-up + cosine "
                     "schedule.", low=1)
    early_stop: int = hp(8, "Stop after this many epochs without a better validation MAE.",
                         low=1)
    lr: dict[str, float] = hp(lambda: dict.fromkeys(GROUPS, 1e-3),
                              "Learning rate of each parameter group.", above=0.0)
    weight_decay: dict[str, float] = hp(lambda: dict.fromkeys(GROUPS, 0.0),
                                        "Weight decay of each parameter group.", low=0.0)
    warmup: float = hp(0.1, "Share of the schedule's steps spent in linear warm-up.",
                       low=0.0, high=1.0)
    fractional_warmup: bool = hp(
        False, "False: the warm-up lasts int(warmup x total steps) steps; True: warmup x total "
        "steps unrounded, as the authors' CLGSI code passes it to the schedule.")
    stop_at_horizon: bool = hp(
        True, "False: train past ``epochs`` (the schedule's horizon, where the cosine restarts "
        "rising) until early stopping, as the authors' CLGSI code does (``while True``).")
    schedule: str = hp(
        "cosine", "``cosine``, ``linear`` or ``constant`` after the warm-up (per optimizer "
        "step), or ``plateau``: the learning rates drop tenfold after ``plateau_patience`` "
        "epochs without a lower validation loss (MMSA's MulT: ``ReduceLROnPlateau``; no "
        "warm-up).", choices=SCHEDULES)
    plateau_patience: int = hp(5, "Epochs without a lower validation loss before "
                               "``schedule=plateau`` drops the learning rates.", low=0)
    grad_clip: float = hp(0.0, "Clip the gradients' global L2 norm to this before each step "
                          "(0 = off).", low=0.0)
    clip_value: float = hp(
        0.0, "Clip every gradient entry to [-v, v] after each backward pass (0 = off): MMSA's "
        "``grad_clip`` (``clip_grad_value_``; MulT 0.6, MISA...).", low=0.0)
    optimizer: str = hp(
        "adamw", "``adamw`` (decoupled weight decay) or ``adam`` (weight decay as an L2 term in "
        "the gradient: ``torch.optim.Adam``, what MMSA's baselines use).", choices=OPTIMIZERS)
    accumulate: int = hp(
        1, "Batches whose gradients are summed before one optimizer step (MMSA's "
        "``update_epochs``); the schedule counts optimizer steps.", low=1)
    step_each_batch: bool = hp(
        False, "Step the optimizer after every batch on the running sum of its group's "
        "gradients (zeroed when a group of ``accumulate`` batches starts), and once more when a "
        "group is complete: MMSA's missingTask trainer (TFR-Net). Off: one step per group.")
    seeds: list[int] = hp(lambda: list(DEFAULT_SEEDS), "One training per seed.", low=0,
                          high=SEED_LIMIT)
    dropout: float | None = hp(None, "When set (e.g. 0), every dropout probability in the "
                               "model takes this value.", low=0.0, high=1.0)
    sampler: str = hp(
        "random", "'random' (plain shuffled batches, as in both papers' code) or 'bucket' (an "
        "opt-in speed setting: batches drawn from length buckets, so cost follows the real "
        "lengths; it changes which samples meet in a batch, hence the contrastive pairs and "
        "BatchNorm statistics).", choices=SAMPLERS)
    standardize: bool = hp(
        False, "Standardise every audio and vision feature with the training split's "
        "per-feature mean and standard deviation (valid frames only; padded frames stay as "
        "they are), for features in their own units such as ``msakit extract``'s. The "
        "statistics are computed once per run and stored in the model's state, so checkpoints "
        "carry them (see :mod:`msakit.data.standardize`). Off: the features reach the model as "
        "the file holds them.")
    bf16: bool = hp(False, "bf16 autocast: the same as ``amp=bf16`` (kept for runs and "
                    "checkpoints that set it).")
    amp: str = hp("off", "Mixed precision: ``off``, ``bf16`` (autocast, CPUs and GPUs) or "
                  "``fp16`` (autocast with a gradient scaler, CUDA only); see "
                  ":mod:`msakit.training.device`.", choices=AMP_MODES)
    deterministic: bool = hp(
        False, "PyTorch's deterministic algorithms and cuDNN's deterministic kernels (no "
        "autotuning); process-wide, set by the Trainer for the run.")
    cache_text: bool = hp(True, "Cache frozen text-encoder outputs (only used when the text "
                          "encoder is not trained).")
    reuse_memory: bool = hp(
        True, "On CPUs, keep freed buffers in the process for the next step (glibc "
        "``mallopt``, which is process-wide and stays; see :mod:`msakit.training.allocator`). "
        "The same default from the command line and the Python API.")
    fast_dropout: bool = hp(
        True, "On CPUs, the trained model's own dropouts draw their masks with NumPy (same "
        "distribution, other draws; see :mod:`msakit.encoders.dropout`). The same default from "
        "the command line and the Python API.")
    allow_vocab_mismatch: bool = hp(
        False, "Train even when the file's token ids do not come from the text encoder's "
        "tokenizer (see :func:`msakit.data.tokens.check_vocabulary`).")
    missing_rate: dict[str, float] = hp(
        lambda: dict.fromkeys(MISSING_MODALITIES, 0.0),
        "MMSA's missing-modality protocol (its ``missingTask``): the share of each modality's "
        "valid positions dropped (``text``, ``audio``, ``vision``; ``--set missing_rate=0.3`` "
        "sets all three, ``missing_rate.audio=0.5`` one), in the training, validation and test "
        "splits of a run and in ``msakit evaluate``: a dropped token becomes [UNK], a dropped "
        "frame zeros; every model reads the inputs with the positions dropped (see "
        ":mod:`msakit.data.missing`). 0: nothing dropped.", low=0.0, high=1.0)
    missing_seed: int = hp(
        1111, "The seed of the missing-modality draws (MMSA's ``missing_seed``): the same "
        "positions are dropped for every training seed; each split's draw starts from it, as "
        "MMSA re-seeds for every split.", low=0, high=SEED_LIMIT)
    init_from: str | None = hp(
        None, "A checkpoint of the same model every seed starts from (``--init-from``; tensors "
        "whose shapes differ keep their fresh initialisation, see "
        ":mod:`msakit.training.init_from`).")
    model: ModelConfig = hp(None, "The model's typed hyperparameters (its ModelConfig; the "
                            "defaults when not given).")
    data: dict[str, Any] | None = hp(
        None, "The content identity of the feature file the run trained on (``file``, "
        "``bytes``, ``blake2b``: :func:`msakit.data.identity.identity`), recorded by run "
        "preparation; a ``--resume`` or ``--config`` with a file of other content is refused. "
        "None until a run has prepared its data (and in runs written before msakit recorded "
        "it).")

    def __post_init__(self) -> None:
        # Typed from here on: a name becomes its spec, a mapping the model's ModelConfig.
        if not isinstance(self.dataset, DatasetSpec):
            self.dataset = dataset_spec(self.dataset)
        if not isinstance(self.model, ModelConfig):
            self.model = _model_settings(self.model_name, self.model)

    @property
    def spec(self) -> DatasetSpec:
        """The data set's :class:`~msakit.config.datasets.DatasetSpec` (``dataset``)."""
        return self.dataset

    def check(self) -> None:
        """The run's one check: every run setting and every model hyperparameter against its
        declaration (its type, then :func:`check_settings`: bounds and choices), then the
        constraints between settings."""
        hints = _setting_types(type(self))  # type: ignore[arg-type]  # classes are hashable
        for f in dataclasses.fields(self):
            if f.name not in ("dataset", "model"):  # typed by __post_init__
                _typed_setting(f.name, getattr(self, f.name), hints[f.name])
        check_settings(self)
        if type(self.model) is not config_class(self.model_name):
            raise MsakitError(f"model: expected the hyperparameters of {self.model_name}, got "
                              f"{type(self.model).__name__}")
        self.model.check()
        amp_mode(self.amp, self.bf16)  # bf16=true and amp=fp16 contradict each other
        if self.amp == "fp16" and (self.accumulate > 1 or self.clip_value > 0):
            raise MsakitError("amp=fp16 (a scaled loss) cannot be combined with accumulate > 1 "
                              "or clip_value; use amp=bf16 or off")
        for key, keys in KEYED.items():
            given = getattr(self, key)
            if set(given) != set(keys):
                what = "groups" if keys is GROUPS else "keys"
                raise MsakitError(f"{key}: expected the {what} {', '.join(keys)}, got "
                                  f"{', '.join(map(str, given)) or 'none'}")
        if not self.seeds:
            raise MsakitError("no seed given")
        if len(set(self.seeds)) != len(self.seeds):
            raise MsakitError(f"seeds repeat: {' '.join(map(str, self.seeds))}")

    def to_dict(self) -> dict[str, Any]:
        """The plain form config.yaml and checkpoints hold: the data set by name (and
        ``dataset_spec``, a custom spec's mapping, else null), the model's hyperparameters as
        a mapping."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "dataset":
                value = value.name
            elif f.name == "model":
                value = value.to_dict()
            out[f.name] = copy.deepcopy(value)
        out["dataset_spec"] = self.dataset.to_dict() if self.dataset.is_custom else None
        out["data"] = out.pop("data")  # the order config.yaml has always had
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, check: bool = True) -> RunConfig:
        """The config of a plain mapping (a checkpoint's, a config.yaml's, in the form
        :meth:`to_dict` writes): keys that are not settings are ignored; every value must be of
        its field's type (:func:`_typed_setting`), and with ``check`` pass :meth:`check`, else
        one ``MsakitError`` naming the key."""
        hints = _setting_types(cls)  # type: ignore[arg-type]  # classes are hashable
        values = {k: _typed_setting(k, v, hints[k]) for k, v in data.items()
                  if k in hints and k not in ("model_name", "dataset", "model")}
        name, dataset = data.get("model_name"), data.get("dataset")
        for key, value in (("model_name", name), ("dataset", dataset)):
            if not isinstance(value, str):
                raise MsakitError(f"{key}: expected a name, got {reprlib.repr(value)}")
        assert isinstance(name, str) and isinstance(dataset, str)  # checked just above
        custom = data.get("dataset_spec")  # plain data (a mapping, bounded) or null
        custom = _typed_setting("dataset_spec", custom, dict[str, Any] | None)
        config = cls(model_name=name, dataset=resolve_spec(dataset, custom),
                     model=_model_settings(name, data.get("model")), **values)
        if check:
            config.check()
        return config

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict(), sort_keys=False)


def _model_settings(model: str, values: Any) -> ModelConfig:
    """``model``'s typed hyperparameters from a mapping (None: the defaults), unchecked."""
    kind = config_class(model)
    if kind is None:
        raise MsakitError(f"unknown model {model!r}")
    if values is not None and not isinstance(values, dict):
        raise MsakitError(f"model: expected a mapping of {model}'s hyperparameters, got "
                          f"{type(values).__name__}")
    return kind.from_dict(values, check=False)


@functools.cache
def _setting_types(cls: type[RunConfig] | None = None) -> dict[str, Any]:
    """Every run setting's type (of ``cls``, a RunConfig or a subclass that declares more)."""
    return typing.get_type_hints(cls or RunConfig)


PLAIN_DEPTH = 32
"""How deeply a free-form setting (``model``, ``dataset_spec``, ``data``) may nest."""


def _typed_setting(key: str, value: Any, annotation: Any) -> Any:
    """``value`` as the RunConfig field ``key`` of type ``annotation`` holds it: ints are ints
    (not booleans, not floats), floats floats (an int is taken as a float), strings strings,
    ``dict[str, float]`` and ``list[int]`` of those, ``dict[str, Any]`` plain data (mappings,
    lists, strings, numbers, booleans, null: what YAML and JSON hold); never a tensor or another
    object a checkpoint may carry. One ``MsakitError`` naming the key otherwise."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (
        annotation,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
            if args[1] is Any:
                _check_plain(key, value)
                return value
            return {k: _typed_setting(f"{key}.{k}", v, args[1]) for k, v in value.items()}
        if origin is list and isinstance(value, list):
            return [_typed_setting(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
        if kind in (int, float) and type(value) is int:
            return kind(value)
        if kind in (bool, float, str) and type(value) is kind:
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed).replace("NoneType",
                                                                                   "null")
    raise MsakitError(f"{key}: expected {names}, got {type(value).__name__} "
                      f"{reprlib.repr(value)}")


def _check_plain(key: str, value: Any) -> None:
    """``value`` holds only plain data, nested at most :data:`PLAIN_DEPTH` deep."""
    stack = [(key, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if depth > PLAIN_DEPTH:
            raise MsakitError(f"{key}: nested more than {PLAIN_DEPTH} levels deep")
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise MsakitError(f"{where}: key {reprlib.repr(k)} is not a string")
                stack.append((f"{where}.{k}", v, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(item))
        elif item is not None and type(item) not in (bool, int, float, str):
            raise MsakitError(f"{where}: expected plain data (a mapping, list, string, number, "
                              f"boolean or null), got {type(item).__name__} "
                              f"{reprlib.repr(item)}")


# Run settings whose value may be null: the type a given value must have. (A model's
# hyperparameters carry their types in the model's ModelConfig.)
NULLABLE_TYPES: dict[str, type] = {"dropout": float, "text_encoder": str}
# Keys that have their own flag: ``--set`` may not set them behind the flag's back.
FLAG_KEYS = {
    "dataset": "--dataset",
    "dataset_spec": "--dataset-spec",
    "model_name": "--model",
    "seeds": "--seeds",
    "init_from": "--init-from",
    "data": "--data",
}


def _rate(key: str, raw: str) -> float:
    """A value of a keyed setting (:data:`KEYED`: a learning rate, a weight decay, a missing
    rate) given as ``--set`` (or a config's group): a number."""
    value = _coerce(key, raw, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MsakitError(f"--set {key}={str(raw)[:40]}: expected a number")
    return float(value)


def _coerce(key: str, raw: str, current: Any) -> Any:
    try:
        value = load_yaml(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise MsakitError(f"--set {key}={raw}: not a valid value ({problem})") from exc
    if value is None:
        return value
    if current is None:
        kind = NULLABLE_TYPES.get(key.split(".")[-1])
        if kind is None:
            return value
        current = kind()
    if isinstance(current, str) and isinstance(value, bool):
        return raw  # YAML 1.1 reads off/on/yes/no as booleans: a string setting keeps the word
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise MsakitError(f"--set {key}={raw}: expected true or false")
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, float) and isinstance(value, str):
        try:  # YAML 1.1 reads exponents without a dot ("5e-3") as strings
            return float(raw)
        except ValueError:
            pass
    if isinstance(current, list) and not isinstance(value, list):
        value = [value]
    if type(value) is not type(current):
        raise MsakitError(
            f"--set {key}={raw}: expected a {type(current).__name__}, got {type(value).__name__}"
        )
    if isinstance(current, list) and current:
        item = type(current[0])
        for x in value:
            if type(x) is not item:
                raise MsakitError(
                    f"--set {key}={raw}: expected a list of {item.__name__}, got {x!r}"
                )
    return value


def apply_overrides(config: RunConfig, overrides: list[str] | dict[str, Any]) -> RunConfig:
    """Apply ``key=value`` overrides; ``lr.text=1e-5`` reaches into a group dict.

    Keys are RunConfig fields, ``lr.G`` / ``weight_decay.G`` for a group G, or a key of the
    model's hyperparameters (``gamma=0.5``, ``fusion=add``; ``model.KEY`` names the model's own
    setting where a run setting has the same name, as MISA's ``model.dropout``). Unknown keys
    are an error. The result is a new configuration (:func:`dataclasses.replace`), checked once
    (:meth:`RunConfig.check`).
    """
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    run: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, raw in items:
        if key in FLAG_KEYS:
            raise MsakitError(
                f"--set {key}: use {FLAG_KEYS[key]} (a --set {key} would override it silently)"
            )
        if key == "preset":
            raise MsakitError("--set preset: choose a named preset with --preset NAME instead")
        if not isinstance(raw, str):
            raw = yaml.safe_dump(raw, default_flow_style=True).strip().removesuffix("...").strip()
        _override(config, key, raw, run=run, model=model)
    new = dataclasses.replace(config, **run, model=config.model.updated(model))
    new.check()
    return new


def _override(
    config: RunConfig, key: str, raw: str, *, run: dict[str, Any], model: dict[str, Any]
) -> None:
    """One ``--set key=raw``, typed by its field, into ``run`` (run settings) or ``model``."""
    hints = _setting_types(type(config))  # type: ignore[arg-type]  # classes are hashable
    top = set(hints) - {"model", "preset", *KEYED, *FLAG_KEYS}
    fields = set(config.model.to_dict())
    if key.startswith("model."):  # the model's own setting, also where a run setting has
        name = key.removeprefix("model.")  # its name (MISA's dropout: --set model.dropout=)
        if name not in fields:
            raise MsakitError(_unknown_key(key, {f"model.{k}" for k in fields}))
        model[name] = _coerce_model(config.model_name, name, raw, getattr(config.model, name))
    elif "." in key:
        group_key, group = key.split(".", 1)
        if group not in KEYED.get(group_key, ()):
            keys = KEYED.get(group_key, GROUPS)
            raise MsakitError(f"--set {key}: unknown key ({'groups' if keys is GROUPS else 'keys'}"
                              f" are {', '.join(keys)})")
        run[group_key] = {**run.get(group_key, getattr(config, group_key)),
                          group: _rate(key, raw)}
    elif key in KEYED:
        run[key] = dict.fromkeys(KEYED[key], _rate(key, raw))
    elif key in top:
        run[key] = _coerce(key, raw, getattr(config, key))
    elif key in fields:
        model[key] = _coerce_model(config.model_name, key, raw, getattr(config.model, key))
    else:
        raise MsakitError(_unknown_key(key, top | fields))


def _unknown_key(key: str, keys: set[str]) -> str:
    """The error line of an unknown ``--set`` key: the keys it may mean (MMSA's names
    included), else every key (the refused ones, :data:`FLAG_KEYS`, never offered)."""
    valid = keys | set(KEYED) | {f"{k}.{g}" for k, gs in KEYED.items() for g in gs}
    near = suggestions(key, valid)
    if near:
        return (f"--set {key}: unknown key; did you mean {', '.join(near)}? ('msakit config "
                "show' lists every key)")
    listed = sorted(k for k in valid if "." not in k)
    return f"--set {key}: unknown key; valid keys: {', '.join(listed)}"


def _coerce_model(model: str, key: str, raw: str, current: Any) -> Any:
    """A model hyperparameter's ``--set`` value, typed by the model's ModelConfig."""
    if current is None:
        settings = config_class(model)
        kind = settings.field_type(key) if settings else None
        allowed = [t for t in getattr(kind, "__args__", (kind,)) if t is not type(None)]
        current = allowed[0]() if allowed and allowed[0] in (int, float, str, bool) else None
    return _coerce(key, raw, current)


def _split(item: str) -> tuple[str, str]:
    if item.strip() in ("help", "list"):
        raise MsakitError(f"--set {item.strip()}: the keys, their documentation, defaults and "
                          "ranges are listed by 'msakit config show --model M --dataset D'")
    if "=" not in item:
        raise MsakitError(f"--set {item}: expected key=value")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def validate(config: RunConfig) -> None:
    """Reject settings that cannot run, with one clear line (:meth:`RunConfig.check`)."""
    config.check()


def with_dataset(config: RunConfig, spec: DatasetSpec) -> RunConfig:
    """``config`` set to the data set ``spec`` (recorded in config.yaml and checkpoints): a
    custom spec's text encoder replaces the preset's (a model without a text encoder, which
    reads the file's precomputed text features, stays without one), and its label scale H
    sets a model hyperparameter named ``label_scale`` (the scale a loss maps labels to [-1, 1]
    with; named presets and ``--set`` applied afterwards may change it)."""
    encoder = config.text_encoder
    if spec.is_custom and encoder is not None:
        encoder = spec.text_encoder
    scale = {"label_scale": float(spec.label_scale)} if hasattr(config.model, "label_scale") \
        else {}
    return dataclasses.replace(config, dataset=spec, text_encoder=encoder,
                               model=config.model.updated(scale))
