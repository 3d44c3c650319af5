"""Weights of a reference implementation, renamed and rearranged into an msakit model.

A *source* (``SOURCES``) knows one reference code base: which msakit model its weights fit, the
configuration that reproduces its computation, and how each of its state-dict entries maps to an
msakit parameter. ``msakit import-weights --from SOURCE`` (:mod:`msakit.importing`) uses it;
further sources (e.g. MMSA's baselines) register here the same way.

``clgsi-authors``: the ``AMIO`` module of the authors' released CLGSI code (AZYoung233/CLGSI,
``models/AMIO.py`` wrapping ``models/multiTask/CLGSI.py``), saved with
``torch.save(model.state_dict())``, text encoder included. Its keys start with ``Model.``:

=============================================  =============================================
authors' key (after ``Model.``)                msakit key
=============================================  =============================================
``text_model.model.*``                         ``text_encoder.*``
``audio_model.transformer_encoder.layers.K.*``  ``audio_encoder.layers.K.*`` (same layer)
``video_model.transformer_encoder.layers.K.*``  ``vision_encoder.layers.K.*``
``post_{text,audio,video}_layer_1.*``          ``project_{text,audio,vision}.fc.*``
``{text,audio,video}_skip_net.fc.0 / fc.2``    ``subnet_{text,audio,vision}.down / up``
``GLFK.fc.0`` (kernel over [T, A, V])          ``fusion.net.global_conv`` (over [V, T, A])
``GLFK.fc.1 / fc.2 / fc.3 / fc.4``             ``fusion.net.local.0 / local.1 / fine /
                                               knowledge``
``post_fusion_layer_skip_connection``          ``head.net.1``; input columns reordered from
(input [F_k; I_t; I_a; I_v])                   the authors' to msakit's [I_t; I_v; I_a; F_k]
``post_fusion_layer_2 / fusionBatchNorm /      ``head.net.2 / head.net.4 / head.net.5``
post_fusion_layer_3``
=============================================  =============================================

Entries the authors' forward never reads are checked for presence and dropped: the template
layer ``{audio,video}_model.encoder_layer.*`` that ``nn.TransformerEncoder`` copied,
``post_{text,audio,video}_layer_2``, ``post_fusion_layer_1``, ``skip_connection_BatchNorm``; the
positional table ``{audio,video}_model.position_embbeding.pe`` is checked against msakit's
sinusoidal table and dropped. The two reorderings permute learned weights of the same function,
so predictions agree to float rounding. Gradients map the same way (:meth:`Source.convert`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from msakit.core.errors import MsakitError
from msakit.encoders.sequence import SinusoidalPositions

Transform = Callable[[torch.Tensor, Any], torch.Tensor]  # (weights, the model's ModelConfig)
DROP = "<dropped>"
"""Marks a reference entry that has no msakit counterpart (never read by its forward)."""


def _same(tensor: torch.Tensor, model_config: dict[str, Any]) -> torch.Tensor:
    return tensor


def _glfk_global(tensor: torch.Tensor, model_config: dict[str, Any]) -> torch.Tensor:
    """(1, 1, 1, 3) kernel over the authors' [T, A, V] -> msakit's [V, T, A]."""
    return tensor[..., [2, 0, 1]].contiguous()


def _head_input_columns(model_config: Any) -> torch.Tensor:  # a CLGSIConfig
    """Indices into the authors' head input [F_k; I_t; I_a; I_v] in msakit's order
    [I_t; I_v; I_a; F_k] (widths d_c for F_k, d_s for each I_m)."""
    d_c, d_s = model_config.common_dim, model_config.specific_dim
    start = {"text": d_c, "audio": d_c + d_s, "vision": d_c + 2 * d_s}
    parts = [torch.arange(start[m], start[m] + d_s) for m in ("text", "vision", "audio")]
    return torch.cat([*parts, torch.arange(0, d_c)])


def _head_first(tensor: torch.Tensor, model_config: Any) -> torch.Tensor:
    return tensor[:, _head_input_columns(model_config)].contiguous()


_MODALITY = {"text": "text", "audio": "audio", "video": "vision"}

# (pattern on the authors' key without "Model.", msakit key template or DROP, transform)
_CLGSI_AUTHORS_RULES: list[tuple[str, str, Transform]] = [
    (r"text_model\.model\.(.+)", r"text_encoder.\1", _same),
    (r"(audio|video)_model\.transformer_encoder\.layers\.(\d+)\.(.+)",
     r"{m}_encoder.layers.\2.\3", _same),
    (r"(audio|video)_model\.encoder_layer\.(.+)", DROP, _same),
    (r"(audio|video)_model\.position_embbeding\.pe", DROP, _same),
    (r"post_(text|audio|video)_layer_1\.(weight|bias)", r"project_{m}.fc.\2", _same),
    (r"post_(text|audio|video)_layer_2\.(weight|bias)", DROP, _same),
    (r"(text|audio|video)_skip_net\.fc\.0\.(weight|bias)", r"subnet_{m}.down.\2", _same),
    (r"(text|audio|video)_skip_net\.fc\.2\.weight", r"subnet_{m}.up.weight", _same),
    (r"GLFK\.fc\.0\.weight", "fusion.net.global_conv.weight", _glfk_global),
    (r"GLFK\.fc\.0\.bias", "fusion.net.global_conv.bias", _same),
    (r"GLFK\.fc\.1\.(weight|bias)", r"fusion.net.local.0.\1", _same),
    (r"GLFK\.fc\.2\.weight", "fusion.net.local.1.weight", _same),
    (r"GLFK\.fc\.3\.(weight|bias)", r"fusion.net.fine.\1", _same),
    (r"GLFK\.fc\.4\.(weight|bias)", r"fusion.net.knowledge.\1", _same),
    (r"post_fusion_layer_skip_connection\.weight", "head.net.1.weight", _head_first),
    (r"post_fusion_layer_skip_connection\.bias", "head.net.1.bias", _same),
    (r"post_fusion_layer_2\.(weight|bias)", r"head.net.2.\1", _same),
    (r"fusionBatchNorm\.(.+)", r"head.net.4.\1", _same),
    (r"post_fusion_layer_3\.(weight|bias)", r"head.net.5.\1", _same),
    (r"post_fusion_layer_1\.(weight|bias)", DROP, _same),
    (r"skip_connection_BatchNorm\.(.+)", DROP, _same),
]
_CLGSI_AUTHORS_DEAD = (
    ["post_fusion_layer_1.weight", "post_fusion_layer_1.bias"]
    + [f"post_{m}_layer_2.{p}" for m in _MODALITY for p in ("weight", "bias")]
    + [f"skip_connection_BatchNorm.{p}" for p in
       ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    + [f"{m}_model.position_embbeding.pe" for m in ("audio", "video")]
)
# Buffers some transformers versions save with BERT and others do not.
_OPTIONAL_TEXT_BUFFERS = ("position_ids", "token_type_ids")


@dataclass(frozen=True)
class Source:
    """One reference code base whose weights msakit can load."""

    name: str
    model: str
    prefix: str
    rules: list[tuple[str, str, Transform]]
    dead: tuple[str, ...]
    """Entries the reference always saves but msakit has no use for (checked for presence)."""
    preset: str
    """The named preset (:func:`msakit.models.registry.preset`) whose configuration reproduces the
    reference's computation."""
    describe: str
    check: Callable[[dict[str, torch.Tensor], str], tuple[list[str], list[str]]] | None = None
    """Source-specific checks of the whole state dict: (missing keys, shape complaints)."""

    def target(self, key: str) -> tuple[str, Transform] | None:
        """(msakit key or DROP, transform) of a reference key, None if no rule matches."""
        if not key.startswith(self.prefix):
            return None
        short = key[len(self.prefix):]
        for pattern, template, transform in self.rules:
            match = re.fullmatch(pattern, short)
            if match is None:
                continue
            if template == DROP:
                return DROP, transform
            name = match.expand(template)
            if "{m}" in name:
                name = name.replace("{m}", _MODALITY[match.group(1)])
            return name, transform
        return None

    def convert(self, tensors: dict[str, torch.Tensor], model_config: dict[str, Any]
                ) -> dict[str, torch.Tensor]:
        """Rename and rearrange reference tensors (weights or their gradients) without checks;
        dropped and unknown entries are left out."""
        out = {}
        for key, value in tensors.items():
            target = self.target(key)
            if target is not None and target[0] != DROP:
                out[target[0]] = target[1](value, model_config)
        return out


def _clgsi_authors_check(state: dict[str, torch.Tensor], where: str
                         ) -> tuple[list[str], list[str]]:
    """The positional tables are msakit's sinusoids; the template layer that
    ``nn.TransformerEncoder`` copied is present, shaped like layer 0."""
    missing, misshapen = [], []
    for modality in ("audio", "video"):
        pe = f"Model.{modality}_model.position_embbeding.pe"
        if pe in state:
            _check_positions(pe, state[pe], where)
        template = f"Model.{modality}_model.encoder_layer."
        layer0 = f"Model.{modality}_model.transformer_encoder.layers.0."
        for key in state:
            if key.startswith(layer0):
                twin = template + key[len(layer0):]
                if twin not in state:
                    missing.append(twin)
                elif state[twin].shape != state[key].shape:
                    misshapen.append(f"{twin} is {_shape(state[twin])}, its layer "
                                     f"{_shape(state[key])}")
    return missing, misshapen


SOURCES: dict[str, Source] = {
    "clgsi-authors": Source(
        name="clgsi-authors",
        model="clgsi",
        prefix="Model.",
        rules=_CLGSI_AUTHORS_RULES,
        dead=tuple(_CLGSI_AUTHORS_DEAD),
        preset="authors",
        describe="the AMIO module of the authors' CLGSI code (AZYoung233/CLGSI)",
        check=_clgsi_authors_check,
    ),
}


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _check_positions(key: str, table: torch.Tensor, where: str) -> None:
    """The authors' positional buffer (1, L, D) must be the sinusoidal table msakit adds."""
    if table.dim() != 3 or table.size(0) != 1:
        raise MsakitError(f"{where}: {key} has shape {_shape(table)}, expected 1xLxD")
    ours = SinusoidalPositions(table.size(2), table.size(1)).table
    if not torch.allclose(table[0].float(), ours, atol=1e-5):
        raise MsakitError(f"{where}: {key} is not the sinusoidal position table msakit uses")


MMSA_PREFIX = "Model."
"""MMSA's ``AMIO`` wraps every model as ``self.Model``: its state-dict keys start with this."""


def rename_mmsa(
    state: dict[str, torch.Tensor], rules: list[tuple[str, str | None]], *, model: str
) -> dict[str, torch.Tensor]:
    """An MMSA ``AMIO`` state dict of ``model`` renamed by ``rules``: (pattern on the key after
    ``Model.``, msakit key template, or None for an entry msakit has no use for).

    Raises :class:`MsakitError` naming the keys no rule knows. Whether every msakit entry is
    filled, with the right shape, is checked by the caller against the model
    (:func:`check_mapped`)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        short = key[len(MMSA_PREFIX):]
        for pattern, template in rules if key.startswith(MMSA_PREFIX) else ():
            match = re.fullmatch(pattern, short)
            if match is not None:
                if template is not None:
                    out[match.expand(template)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise MsakitError(f"not MMSA's {model} weights: {_listing('unexpected keys', unknown)}")
    return out


def check_mapped(
    mapped: dict[str, torch.Tensor], model: nn.Module, where: str
) -> dict[str, torch.Tensor]:
    """``mapped`` (an importer's output) as ``model``'s state dict, in its dtypes; raises
    :class:`MsakitError` naming the entries that are missing, unknown or shaped otherwise."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in mapped and not k.endswith(_OPTIONAL_TEXT_BUFFERS)]
    unexpected = [k for k in mapped if k not in ours and not k.endswith(_OPTIONAL_TEXT_BUFFERS)]
    misshapen = [f"{k} is {_shape(v)}, the configuration needs {_shape(ours[k])}"
                 for k, v in mapped.items() if k in ours and v.shape != ours[k].shape]
    problems = _problems([("no entry for msakit's", missing),
                          ("entries msakit's model does not have", unexpected),
                          ("shapes differ", misshapen)])
    if problems:
        raise MsakitError(
            f"{where}: the weights do not fit this configuration: {'; '.join(problems)} "
            "(check --dataset, the data file and --set values)"
        )
    return {k: v.to(ours[k].dtype) for k, v in mapped.items() if k in ours}


def plain_state_dict(state: Any, where: str) -> dict[str, torch.Tensor]:
    """``state`` checked to be a dict of tensors by name, without DataParallel's ``module.``."""
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise MsakitError(f"{where}: not a state dict (a dict of tensors by name)")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_reference_state(
    source: Source, state: Any, model: nn.Module, where: str
) -> dict[str, torch.Tensor]:
    """Check a reference state dict against ``model`` and return ``model``'s state dict from it.

    Raises :class:`MsakitError` with one line on an unknown, missing or misshapen entry.
    """
    state = plain_state_dict(state, where)
    ours = model.state_dict()
    config: Any = model.config  # the model's ModelConfig
    mapped: dict[str, torch.Tensor] = {}
    unexpected, misshapen = [], []
    for key, value in state.items():
        target = source.target(key)
        if target is None:
            unexpected.append(key)
            continue
        name, transform = target
        if name == DROP:
            continue
        if name not in ours:
            if name.startswith("text_encoder.") and name.endswith(_OPTIONAL_TEXT_BUFFERS):
                continue
            unexpected.append(key)
            continue
        if value.shape != ours[name].shape:
            misshapen.append(f"{key} is {_shape(value)}, the configuration needs "
                             f"{_shape(ours[name])}")
            continue
        mapped[name] = transform(value, config).to(ours[name].dtype)
    unfilled = [k for k in ours if k not in mapped and not k.endswith(_OPTIONAL_TEXT_BUFFERS)]
    missing = [source.prefix + k for k in source.dead if source.prefix + k not in state]
    if source.check is not None:
        more_missing, more_misshapen = source.check(state, where)
        missing += more_missing
        misshapen += more_misshapen
    problems = _problems([("unexpected keys", unexpected), ("missing keys", missing),
                          ("no entry for msakit's", unfilled), ("shapes differ", misshapen)])
    if problems:
        raise MsakitError(
            f"{where}: not {source.describe} for this configuration: {'; '.join(problems)} "
            "(check --dataset, the text encoder and --set values such as common_dim)"
        )
    return mapped


def _problems(kinds: list[tuple[str, list[str]]]) -> list[str]:
    """One :func:`_listing` per kind of problem that has any entries."""
    return [_listing(what, items) for what, items in kinds if items]


def _listing(what: str, items: list[str], shown: int = 3) -> str:
    more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
    return f"{what} {', '.join(items[:shown])}{more}"


# ---------------------------------------------------------------- module-by-module renaming
LINEAR = ("weight", "bias")
"""The entries of an ``nn.Linear`` or ``nn.LayerNorm``."""
BIRNN = tuple(
    f"{kind}_{part}_l0{direction}"
    for direction in ("", "_reverse") for kind in ("weight", "bias") for part in ("ih", "hh")
)
"""The entries of a one-layer bidirectional ``nn.LSTM`` / ``nn.GRU``."""


@dataclass(frozen=True)
class ModuleRule:
    """A reference module whose entries move under another name (or are dropped)."""

    source: str
    """The reference module's name (after the source's prefix), e.g. ``shared.shared_1``."""
    target: str | None
    """msakit's module name, or None: present in the reference, never read, dropped."""
    leaves: tuple[str, ...] | None = LINEAR
    """The module's entries, all required; None: any entries, at least one (e.g. a BERT)."""
    optional: bool = False
    """Absent in some configurations of the reference (then not required)."""


def rename_modules(state: Any, rules: list[ModuleRule], *, prefix: str, describe: str
                   ) -> dict[str, torch.Tensor]:
    """Map a reference state dict (weights or gradients) module by module onto msakit's names.

    Raises :class:`MsakitError` naming the first unknown entries (no rule) and the missing ones
    (a rule's entry absent). Shapes are checked when the result is loaded into the model.
    """
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise MsakitError(f"not {describe}: not a state dict (a dict of tensors by name)")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    for rule in rules:
        head = prefix + rule.source + "."
        found = {k[len(head):]: v for k, v in state.items() if k.startswith(head)}
        if rule.leaves is not None:
            found = {leaf: v for leaf, v in found.items() if leaf in rule.leaves}
        seen.update(head + leaf for leaf in found)
        if not found and rule.optional:
            continue
        needed = rule.leaves if rule.leaves is not None else ()
        missing = [head + leaf for leaf in needed if leaf not in found]
        if not found and not needed:
            missing = [head + "*"]
        if missing:
            raise MsakitError(f"not {describe}: {_listing('missing keys', missing)}")
        if rule.target is not None:
            out.update({f"{rule.target}.{leaf}": v for leaf, v in found.items()})
    unknown = [k for k in state if k not in seen]
    if unknown:
        raise MsakitError(f"not {describe}: {_listing('unexpected keys', unknown)}")
    return out
