"""Starting a run from another run's weights (``msakit train --init-from CKPT``).

ConKI's Table 6 trains each baseline with MOSEI as external data and then on the target data set
(MOSI, SIMS). A model trained on another data set has other input widths (MOSEI's audio/vision
features are 74/35 wide, MOSI's 5/20), so a checkpoint's tensors are taken where their shapes
equal the new model's, and the others (the layers that read the input widths) keep the new
model's fresh initialisation; which ones is said before training. Any model works: the
checkpoint must be the same ``--model`` with the same architecture settings (the same tensor
names), otherwise one ``error:`` line names the difference. The feature statistics of a run
with ``standardize=true`` are never taken: each run standardises with its own training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msakit.core.errors import MsakitError
from msakit.models.base import STANDARDIZER, first_non_finite
from msakit.training.pretrained import read_checkpoint

# Buffers that some transformers versions save with BERT and others do not.
_OPTIONAL = ("position_ids", "token_type_ids")


@dataclass(frozen=True)
class InitFrom:
    """The tensors a run starts from (those whose shapes fit) and the ones re-initialised."""

    path: Path
    tensors: dict[str, torch.Tensor]
    reinitialised: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    """(name, the checkpoint's shape, the model's shape)."""

    def apply(self, model: nn.Module) -> None:
        """Load the fitting tensors; every other tensor keeps the model's own values."""
        model.load_state_dict(self.tensors, strict=False)

    def describe(self) -> list[str]:
        """The lines printed before training."""
        total = len(self.tensors) + len(self.reinitialised)
        lines = [f"note: --init-from {self.path}: {len(self.tensors)} of {total} tensors start "
                 "from it" + (";" if self.reinitialised else " (every shape fits)")]
        if self.reinitialised:
            lines[0] += " re-initialised, their shapes differ:"
            lines += [f"  {name}: {_shape(old)} -> {_shape(new)}"
                      for name, old, new in self.reinitialised]
        return lines


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _read(path: Path) -> dict[str, Any]:

    try:
        state = read_checkpoint(path)  # a seed's safetensors folder, or a torch file
    except MsakitError as exc:
        raise MsakitError(f"--init-from {exc}") from None
    config = state.get("config") if isinstance(state, dict) else None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(config, dict) or not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise MsakitError(f"--init-from {path}: not an msakit checkpoint (no 'model' weights "
                          "and 'config')")
    return state


def read_init_from(path: Path, model_name: str, model: nn.Module) -> InitFrom:
    """Check checkpoint ``path`` against ``model`` (a freshly built ``model_name``) and choose
    its tensors; one :class:`MsakitError` line if it is unreadable, another model's, or has
    other tensor names."""
    state = _read(path)
    theirs_name = state["config"].get("model_name")
    if theirs_name != model_name:
        raise MsakitError(
            f"--init-from {path}: a {theirs_name} checkpoint; the run trains {model_name} "
            "(--init-from takes a checkpoint of the same --model)"
        )
    # The feature statistics of standardize=true belong to each run's own training data: the
    # run keeps its own (or has none), whatever the checkpoint holds.
    theirs = {k: v for k, v in state["model"].items() if not k.startswith(f"{STANDARDIZER}.")}
    bad = first_non_finite(theirs)
    if bad is not None:
        raise MsakitError(f"--init-from {path}: weight {bad} holds NaN or infinite values")
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{STANDARDIZER}.")}
    missing = sorted(k for k in ours.keys() - theirs.keys() if not k.endswith(_OPTIONAL))
    unexpected = sorted(k for k in theirs.keys() - ours.keys() if not k.endswith(_OPTIONAL))
    if missing or unexpected:
        what = [f"{label} {', '.join(keys[:3])}" + (f" (+{len(keys) - 3} more)"
                                                     if len(keys) > 3 else "")
                for label, keys in (("lacks", missing), ("has extra", unexpected)) if keys]
        raise MsakitError(
            f"--init-from {path}: its {model_name} weights do not fit this run's model "
            f"({'; '.join(what)}); train with the checkpoint's model settings and text encoder"
        )
    tensors, reinitialised = {}, []
    for name, value in ours.items():
        if name not in theirs:
            continue
        if theirs[name].shape == value.shape:
            tensors[name] = theirs[name].to(value.dtype)
        else:
            reinitialised.append((name, tuple(theirs[name].shape), tuple(value.shape)))
    return InitFrom(path=path, tensors=tensors, reinitialised=reinitialised)
