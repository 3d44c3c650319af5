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

import dataclasses
import functools
import json
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from msakit.config.datasets import DATASETS, DatasetSpec, resolve_spec
from msakit.config.model_config import config_class
from msakit.core.errors import MsakitError
from msakit.core.safe_yaml import dump_yaml, load_yaml

__all__ = ["DATASETS", "RunConfig", "apply_overrides", "validate", "with_dataset"]
GROUPS = ("text", "audio", "vision", "other")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "linear", "constant", "plateau")


def groups(*, text: float, audio: float, vision: float, other: float) -> dict[str, float]:
    """A per-group setting (learning rate, weight decay) as RunConfig stores it, named by
    group: ``groups(text=5e-5, audio=1e-3, vision=5e-3, other=1e-2)``."""
    return {"text": text, "audio": audio, "vision": vision, "other": other}


DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)
"""MMSA's five seeds: both papers report means over several runs."""

AMP_MODES = ("off", "bf16", "fp16")
"""Mixed precision: none, bf16 autocast, fp16 autocast with a gradient scaler (CUDA)."""


def amp_mode(amp: str, bf16: bool = False) -> str:
    """The run's mixed precision: ``amp``, or ``"bf16"`` for the older ``bf16=true``."""
    if amp not in AMP_MODES:
        raise MsakitError(f"amp must be {', '.join(AMP_MODES)}, got {amp!r}")
    if bf16 and amp == "fp16":
        raise MsakitError("bf16=true and amp=fp16 contradict each other; set amp only")
    return "bf16" if bf16 and amp == "off" else amp


CLI_SETTINGS = ("reuse_memory=true", "fast_dropout=true")
"""The CPU speed settings the command line applies before the user's ``--set`` (which can
turn them off); the Python API leaves them off unless asked."""


def plain(obj: Any) -> Any:
    """A JSON round trip: only dicts, lists, strings, numbers, booleans and None remain, which
    is what a checkpoint read with ``torch.load(weights_only=True)`` may hold."""
    return json.loads(json.dumps(obj, default=str))


@dataclass
class RunConfig:
    """Everything needed to rebuild and retrain a run; saved beside every checkpoint."""

    model_name: str
    dataset: str
    """A named data set (:data:`msakit.config.datasets.DATASETS`) or ``custom``."""
    preset: str = "paper"
    """The named preset the run started from (``--preset``; each model declares its own)."""
    text_encoder: str | None = None
    """Hub name, folder or ``minilm``; the presets set the papers' encoder of the data set."""
    batch_size: int = 64
    epochs: int = 50
    """Upper bound on epochs and the horizon of the warm-up + cosine schedule."""
    early_stop: int = 8
    """Stop after this many epochs without a better validation MAE."""
    lr: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GROUPS, 1e-3))
    weight_decay: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GROUPS, 0.0))
    warmup: float = 0.1
    """Share of the schedule's steps spent in linear warm-up."""
    fractional_warmup: bool = False
    """False: the warm-up lasts int(warmup x total steps) steps; True: warmup x total steps
    unrounded, as the authors' CLGSI code passes it to the schedule."""
    stop_at_horizon: bool = True
    """False: train past ``epochs`` (the schedule's horizon, where the cosine restarts
    rising) until early stopping, as the authors' CLGSI code does (``while True``)."""
    schedule: str = "cosine"
    """``cosine``, ``linear`` or ``constant`` after the warm-up (per optimizer step), or
    ``plateau``: the learning rates drop tenfold after ``plateau_patience`` epochs without a
    lower validation loss (MMSA's MulT: ``ReduceLROnPlateau``; no warm-up)."""
    plateau_patience: int = 5
    grad_clip: float = 0.0
    """Clip the gradients' global L2 norm to this before each step (0 = off)."""
    clip_value: float = 0.0
    """Clip every gradient entry to [-v, v] after each backward pass (0 = off): MMSA's
    ``grad_clip`` (``clip_grad_value_``; MulT 0.6, MISA...)."""
    optimizer: str = "adamw"
    """``adamw`` (decoupled weight decay) or ``adam`` (weight decay as an L2 term in the
    gradient: ``torch.optim.Adam``, what MMSA's baselines use)."""
    accumulate: int = 1
    """Batches whose gradients are summed before one optimizer step (MMSA's
    ``update_epochs``); the schedule counts optimizer steps."""
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    dropout: float | None = None
    """When set (e.g. 0), every dropout probability in the model takes this value."""
    sampler: str = "random"
    """'random' (plain shuffled batches, as in both papers' code) or 'bucket' (an opt-in speed
    setting: batches drawn from length buckets, so cost follows the real lengths; it changes
    which samples meet in a batch, hence the contrastive pairs and BatchNorm statistics)."""
    standardize: bool = False
    """Standardise every audio and vision feature with the training split's per-feature mean
    and standard deviation (valid frames only; padded frames stay as they are), for features
    in their own units such as ``msakit extract``'s. The statistics are computed once per run
    and stored in the model's state, so checkpoints carry them (see
    :mod:`msakit.data.standardize`). Off: the features reach the model as the file holds them."""
    bf16: bool = False
    """bf16 autocast: the same as ``amp=bf16`` (kept for runs and checkpoints that set it)."""
    amp: str = "off"
    """Mixed precision: ``off``, ``bf16`` (autocast, CPUs and GPUs) or ``fp16`` (autocast with
    a gradient scaler, CUDA only); see :mod:`msakit.training.device`."""
    deterministic: bool = False
    """PyTorch's deterministic algorithms and cuDNN's deterministic kernels (no autotuning);
    process-wide, set by the Trainer for the run."""
    cache_text: bool = True
    """Cache frozen text-encoder outputs (only used when the text encoder is not trained)."""
    reuse_memory: bool = False
    """On CPUs, keep freed buffers in the process for the next step (glibc ``mallopt``, which
    is process-wide and stays; see :mod:`msakit.training.allocator`). Off in the Python API
    unless asked; the command line turns it on (:data:`CLI_SETTINGS`)."""
    fast_dropout: bool = False
    """On CPUs, the trained model's own dropouts draw their masks with NumPy (same
    distribution, other draws; see :mod:`msakit.encoders.dropout`). Off in the Python API
    unless asked; the command line turns it on (:data:`CLI_SETTINGS`)."""
    allow_vocab_mismatch: bool = False
    """Train even when the file's token ids do not come from the text encoder's tokenizer
    (see :func:`msakit.data.tokens.check_vocabulary`)."""
    init_from: str | None = None
    """A checkpoint of the same model every seed starts from (``--init-from``; tensors whose
    shapes differ keep their fresh initialisation, see :mod:`msakit.training.init_from`)."""
    model: dict[str, Any] = field(default_factory=dict)
    dataset_spec: dict[str, Any] | None = None
    """The spec of a ``custom`` data set (:meth:`DatasetSpec.to_dict`); None for named ones."""
    data: dict[str, Any] | None = None
    """The content identity of the feature file the run trained on (``file``, ``bytes``,
    ``blake2b``: :func:`msakit.data.identity.identity`), recorded by run preparation; a
    ``--resume`` or ``--config`` with a file of other content is refused. None until a run
    has prepared its data (and in runs written before msakit recorded it)."""

    @property
    def spec(self) -> DatasetSpec:
        """The data set's :class:`~msakit.config.datasets.DatasetSpec`."""
        return resolve_spec(self.dataset, self.dataset_spec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The config of a plain mapping (a checkpoint's, a preset's, ``--set``'s result):
        keys that are not settings are ignored; every value must be of its field's type
        (:func:`_typed_setting`), else one ``MsakitError`` naming the key."""
        hints = _setting_types()
        return cls(**{k: _typed_setting(k, v, hints[k]) for k, v in data.items() if k in hints})

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict(), sort_keys=False)


@functools.cache
def _setting_types() -> dict[str, Any]:
    return typing.get_type_hints(RunConfig)


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
SEED_LIMIT = 2**32
"""Seeds are in [0, 2^32): NumPy's legacy seeding takes no more."""


def _rate(key: str, raw: str) -> float:
    """A learning rate or weight decay given as ``--set`` (or a config's group): a number."""
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
    model's hyperparameters (``gamma=0.5``, ``fusion=add``). Unknown keys are an error.
    """
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    data = config.to_dict()
    top = {f.name for f in dataclasses.fields(RunConfig)} - {"model", "lr", "weight_decay"}
    top.discard("preset")  # recorded, not set: --preset applies the named preset's values
    for key, raw in items:
        if key in FLAG_KEYS:
            raise MsakitError(
                f"--set {key}: use {FLAG_KEYS[key]} (a --set {key} would override it silently)"
            )
        if key == "preset":
            raise MsakitError("--set preset: choose a named preset with --preset NAME instead")
        if not isinstance(raw, str):
            raw = yaml.safe_dump(raw, default_flow_style=True).strip().removesuffix("...").strip()
        if "." in key:
            group_key, group = key.split(".", 1)
            if group_key not in ("lr", "weight_decay") or group not in GROUPS:
                raise MsakitError(f"--set {key}: unknown key (groups are {', '.join(GROUPS)})")
            data[group_key][group] = _rate(key, raw)
        elif key in ("lr", "weight_decay"):
            data[key] = dict.fromkeys(GROUPS, _rate(key, raw))
        elif key in top:
            data[key] = _coerce(key, raw, data[key])
        elif key in data["model"]:
            data["model"][key] = _coerce_model(config.model_name, key, raw, data["model"][key])
        else:
            valid = sorted(top | {"lr", "weight_decay"} | set(data["model"]))
            raise MsakitError(f"--set {key}: unknown key; valid keys: {', '.join(valid)}")
    new = RunConfig.from_dict(data)
    validate(new)
    return new


def _coerce_model(model: str, key: str, raw: str, current: Any) -> Any:
    """A model hyperparameter's ``--set`` value, typed by the model's ModelConfig."""
    if current is None:
        kind = config_class(model).field_type(key) if config_class(model) else None
        allowed = [t for t in getattr(kind, "__args__", (kind,)) if t is not type(None)]
        current = allowed[0]() if allowed and allowed[0] in (int, float, str, bool) else None
    return _coerce(key, raw, current)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise MsakitError(f"--set {item}: expected key=value")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def validate(config: RunConfig) -> None:
    """Reject settings that cannot run, with one clear line."""
    resolve_spec(config.dataset, config.dataset_spec)  # named, or custom with a valid spec
    if config.batch_size < 1:
        raise MsakitError(f"batch size must be at least 1, got {config.batch_size}")
    if config.epochs < 1:
        raise MsakitError(f"epochs must be at least 1, got {config.epochs}")
    if config.sampler not in ("random", "bucket"):
        raise MsakitError(f"sampler must be 'random' or 'bucket', got {config.sampler!r}")
    amp_mode(config.amp, config.bf16)  # a known mode, not contradicting bf16
    if config.schedule not in SCHEDULES:
        raise MsakitError(f"schedule must be {', '.join(SCHEDULES)}, got {config.schedule!r}")
    if config.plateau_patience < 0:
        raise MsakitError(f"plateau_patience must be >= 0, got {config.plateau_patience}")
    if not 0.0 <= config.warmup < 1.0:
        raise MsakitError(f"warmup is a share of the steps in [0, 1), got {config.warmup}")
    if config.dropout is not None and not 0.0 <= config.dropout < 1.0:
        raise MsakitError(f"dropout must be in [0, 1), got {config.dropout}")
    if config.early_stop < 1:
        raise MsakitError(f"early_stop must be at least 1, got {config.early_stop}")
    if not config.grad_clip >= 0:
        raise MsakitError(f"grad_clip must be >= 0 (0 = off), got {config.grad_clip}")
    if not config.clip_value >= 0:
        raise MsakitError(f"clip_value must be >= 0 (0 = off), got {config.clip_value}")
    if config.optimizer not in OPTIMIZERS:
        raise MsakitError(f"optimizer must be {' or '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if isinstance(config.accumulate, bool) or not config.accumulate >= 1:
        raise MsakitError(f"accumulate must be at least 1, got {config.accumulate}")
    if config.amp == "fp16" and (config.accumulate > 1 or config.clip_value > 0):
        raise MsakitError("amp=fp16 (a scaled loss) cannot be combined with accumulate > 1 "
                          "or clip_value; use amp=bf16 or off")
    for group in GROUPS:
        lr, wd = config.lr.get(group), config.weight_decay.get(group)
        if not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
            raise MsakitError(f"lr.{group} must be a number > 0, got {lr}")
        if not isinstance(wd, (int, float)) or not 0 <= wd < float("inf"):
            raise MsakitError(f"weight_decay.{group} must be a number >= 0, got {wd}")
    if not config.seeds:
        raise MsakitError("no seed given")
    for seed in config.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
            raise MsakitError(f"seed {seed} is not an integer in [0, 2^32)")
    if len(set(config.seeds)) != len(config.seeds):
        raise MsakitError(f"seeds repeat: {' '.join(map(str, config.seeds))}")
    model_config = config_class(config.model_name)
    if model_config is not None:  # a model's file declares it; the builder checks again
        model_config.from_dict(config.model)


def with_dataset(config: RunConfig, spec: DatasetSpec) -> RunConfig:
    """``config`` set to the data set ``spec``: its name, its spec when custom (recorded in
    config.yaml and checkpoints), a custom spec's text encoder, and its label scale H for a
    model hyperparameter named ``label_scale`` (the scale a loss maps labels to [-1, 1] with;
    named presets and ``--set`` applied afterwards may change it)."""
    config.dataset = spec.name
    config.dataset_spec = spec.to_dict() if spec.is_custom else None
    if spec.is_custom:
        config.text_encoder = spec.text_encoder
    if "label_scale" in config.model:
        config.model["label_scale"] = float(spec.label_scale)
    return config
