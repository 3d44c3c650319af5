"""A seed's weights as a Hugging Face-style folder: ``model.safetensors`` beside ``config.json``.

``msakit train`` keeps each seed's best weights as

- ``seed-S/model.safetensors``: the weights (safetensors: tensors and a string header, no
  pickle), with ``format``, ``epoch``, ``seed`` and ``valid`` (the validation metrics of the
  best epoch, JSON) in the file's metadata;
- ``seed-S/config.json``: what rebuilds the model, as plain JSON: ``format``
  (:data:`FORMAT`), ``config`` (the run configuration), ``dims`` (the feature dims),
  ``text_encoder_config`` (the text encoder's architecture), ``extractor`` (for a file from
  ``msakit extract``) and, when the text encoder is frozen, ``shared_weights``.

A frozen text encoder (the model's :meth:`~msakit.models.base.MSAModel.trains_text_encoder` is
False) is the same in every seed: its tensors (the state-dict entries under ``text_encoder.``)
are written once per run folder, content-addressed, as ``RUN/text_encoder-HASH.safetensors``
(``HASH``: the first 16 hex digits of the file's SHA-256), and ``config.json`` names the file
and its full digest; reading checks the digest. Nothing here unpickles: :func:`read_checkpoint`
reads these folders with safetensors and JSON, and earlier ``best.pt`` files (and
``msakit import`` output) with ``torch.load(weights_only=True)``.

:func:`read_checkpoint` returns the same mapping for both formats (``model``: the weights,
``config``, ``dims``, ``text_encoder_config``, ``extractor``, ``format``, ``epoch``, ``seed``,
``valid``), which :func:`msakit.api.load_checkpoint` and ``--init-from`` check and use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from msakit.core.errors import MsakitError
from msakit.core.files import write_atomic, write_text_atomic
from msakit.core.safety import Input, check_input

FORMAT = "msakit-pretrained-1"
"""``config.json``'s ``format``: the layout described in the module docstring."""
WEIGHTS = "model.safetensors"
DESCRIPTION = "config.json"
LEGACY = "best.pt"
"""The best weights as torch files (written before :data:`FORMAT`; still read)."""
SEED_WEIGHT_FILES = (WEIGHTS, DESCRIPTION, LEGACY)
"""What holds a seed's best weights (``--save none`` removes them when the seed ends)."""
FROZEN_PREFIX = "text_encoder."
SHARED_PATTERN = "text_encoder-*.safetensors"
"""A run folder's frozen text encoders (content-addressed)."""
_SHARED_NAME = re.compile(r"text_encoder-[0-9a-f]{16}\.safetensors")
_META_KEYS = ("epoch", "seed", "valid")
WEIGHT_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16,
                           torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                           torch.bool})
"""The tensor types a checkpoint's weights may have (those of models' parameters and buffers):
a weight of another (float8, complex, ...) is refused when it is read, before anything checks
or computes with it."""


# --------------------------------------------------------------------------- writing
def frozen_prefix(model: torch.nn.Module) -> str | None:
    """``"text_encoder."`` for a model whose text encoder is not trained (its weights are the
    pretrained ones in every seed), else None."""
    trains = getattr(model, "trains_text_encoder", None)
    if getattr(model, "text_encoder", None) is None or trains is None or trains():
        return None
    return FROZEN_PREFIX


def save_pretrained(
    folder: Path, weights: dict[str, torch.Tensor], *, description: dict[str, Any],
    meta: dict[str, Any], shared_prefix: str | None = None,
) -> None:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (see the module docstring),
    each atomically; the tensors under ``shared_prefix`` go to the run folder (``folder``'s
    parent) once. ``description``: ``config``, ``dims``, ``text_encoder_config`` (and
    ``extractor``); ``meta``: ``epoch``, ``seed``, ``valid``. An earlier ``best.pt`` in
    ``folder`` is removed once the new weights are in place (one best per seed)."""
    from safetensors.torch import save

    own = {k: _plain(v) for k, v in weights.items()}
    shared = None
    if shared_prefix is not None:
        frozen = {k: own.pop(k) for k in list(own) if k.startswith(shared_prefix)}
        if frozen:
            shared = _write_shared(folder.parent, save(frozen, metadata={"format": FORMAT}),
                                   shared_prefix)
    text = json.dumps({"format": FORMAT, **description,
                       **({"shared_weights": shared} if shared else {})}, indent=1)
    path = folder / DESCRIPTION
    if not (path.is_file() and path.read_text() == text):
        write_text_atomic(path, text)
    header = {"format": FORMAT, "epoch": str(meta.get("epoch")), "seed": str(meta.get("seed")),
              "valid": json.dumps(meta.get("valid", {}))}
    data = save(own, metadata=header)
    write_atomic(folder / WEIGHTS, lambda f: f.write(data))
    (folder / LEGACY).unlink(missing_ok=True)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor safetensors can store: on the CPU, contiguous, its own storage (tied weights
    share one)."""
    return tensor.detach().cpu().contiguous().clone()


def _write_shared(run: Path, data: bytes, prefix: str) -> dict[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    name = f"text_encoder-{digest[:16]}.safetensors"
    # content-addressed: an existing file of the name and size is this content (reading
    # checks the whole digest)
    if not ((run / name).is_file() and (run / name).stat().st_size == len(data)):
        write_atomic(run / name, lambda f: f.write(data))
    return {"file": name, "sha256": digest, "prefix": prefix}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_weights(seed_dir: Path) -> None:
    """Remove a seed's best weights (``--save none`` once the seed is evaluated)."""
    for name in SEED_WEIGHT_FILES:
        (seed_dir / name).unlink(missing_ok=True)


def finish_seed(seed_dir: Path, save: str) -> None:
    """What a seed keeps once it is evaluated and its ``history.json`` written: ``save``
    ``"best"`` its best weights (``last.pt`` removed), ``"last"`` also ``last.pt``, ``"none"``
    neither (:data:`msakit.api.SAVE_MODES`)."""
    if save != "last":
        (seed_dir / "last.pt").unlink(missing_ok=True)
    if save == "none":
        remove_weights(seed_dir)


def finished_seed(seed_dir: Path) -> bool:
    """Whether a seed finished and kept no ``last.pt`` (``--save best|none``): a resume takes
    its row from ``results.csv`` rather than training it again. A seed with ``last.pt``
    resumes from it (after its last epoch: no epoch to train)."""
    return (seed_dir / "history.json").is_file() and not (seed_dir / "last.pt").exists()


def prune_shared(run: Path) -> None:
    """Remove the run folder's shared text-encoder files that no seed's ``config.json``
    names (all of them after ``--save none``)."""
    used = set()
    for description in run.glob(f"seed-*/{DESCRIPTION}"):
        try:
            used.add(json.loads(description.read_text()).get("shared_weights", {}).get("file"))
        except (OSError, ValueError, AttributeError):
            continue  # not ours to judge here: reading the checkpoint names the problem
    for path in run.glob(SHARED_PATTERN):
        if path.name not in used:
            path.unlink(missing_ok=True)


def best_weights_file(seed_dir: Path) -> Path | None:
    """The file holding a seed's best weights: ``model.safetensors``, else an earlier
    ``best.pt``, else None."""
    for name in (WEIGHTS, LEGACY):
        if (seed_dir / name).is_file():
            return seed_dir / name
    return None


# --------------------------------------------------------------------------- reading
def is_pretrained(path: Path) -> bool:
    """Whether checkpoint file ``path`` is one of a safetensors folder."""
    return path.name in (WEIGHTS, DESCRIPTION) or path.suffix == ".safetensors"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (a folder's ``model.safetensors`` or ``config.json``, or a
    torch file such as ``best.pt``) as one mapping (see the module docstring); one
    :class:`MsakitError` line naming the file when it cannot be read or holds a weight of a
    type no model has (:data:`WEIGHT_DTYPES`)."""
    if is_pretrained(path):
        state = read_pretrained(path.parent, weights=path if path.suffix == ".safetensors"
                                else path.parent / WEIGHTS)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
            raise MsakitError(f"{path}: not a readable msakit checkpoint "
                              f"({type(exc).__name__})") from None
    weights = state.get("model") if isinstance(state, dict) else None
    for name, value in (weights.items() if isinstance(weights, dict) else ()):
        if isinstance(value, torch.Tensor) and value.dtype not in WEIGHT_DTYPES:
            raise MsakitError(f"{path}: weight {name} is {value.dtype}; a model's weights are "
                              "float16, bfloat16, float32, float64, integers or bool")
    return state


def read_pretrained(folder: Path, *, weights: Path | None = None) -> dict[str, Any]:
    """Read a folder written by :func:`save_pretrained` (no pickle anywhere)."""
    weights = weights or folder / WEIGHTS
    description = _read_description(folder / DESCRIPTION)
    tensors, header = _read_tensors(weights)
    if header.get("format") != FORMAT:
        raise MsakitError(f"{weights}: not an msakit weights file (format "
                          f"{header.get('format')!r}, expected {FORMAT})")
    shared = description.pop("shared_weights", None)
    if shared is not None:
        tensors.update(_read_shared(folder / DESCRIPTION, folder.parent, shared, set(tensors)))
    return {"model": tensors, **description, **_metadata(weights, header)}


def _metadata(weights: Path, header: dict[str, str]) -> dict[str, Any]:
    """The best epoch, the seed and the validation metrics (a mapping of metric names to
    numbers, null for an undefined one) that the weights file's header records; one
    :class:`MsakitError` line when any is missing or malformed."""
    malformed = MsakitError(f"{weights}: its metadata ({', '.join(_META_KEYS)}) is malformed")
    try:
        epoch, seed = int(header["epoch"]), int(header["seed"])
        valid = json.loads(header["valid"])
    except (KeyError, ValueError, TypeError, RecursionError):  # deep JSON: RecursionError
        raise malformed from None
    if not (isinstance(valid, dict) and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in valid.values())):
        raise malformed
    return {"epoch": epoch, "seed": seed, "valid": valid}


def _read_description(path: Path) -> dict[str, Any]:
    if not os.path.lexists(path):
        raise MsakitError(f"{path} does not exist: a model.safetensors needs the config.json "
                          "written beside it")
    check_input(Input("checkpoint", path))
    try:
        text = path.read_bytes().decode("utf-8")
        description = json.loads(text)
    except FileNotFoundError:
        raise MsakitError(f"{path} does not exist: a model.safetensors needs the config.json "
                          "written beside it") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MsakitError(f"{path}: not a readable msakit config.json "
                          f"({type(exc).__name__})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        found = description.get("format") if isinstance(description, dict) else None
        raise MsakitError(f"{path}: not an msakit config.json (format {found!r}, expected "
                          f"{FORMAT})")
    return description


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not os.path.lexists(path):
        raise MsakitError(f"{path} does not exist (the weights of {path.parent})")
    check_input(Input("checkpoint", path))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except FileNotFoundError:
        raise MsakitError(f"{path} does not exist (the weights of {path.parent})") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise MsakitError(f"{path}: not a readable safetensors file "
                          f"({type(exc).__name__}: {first})") from None


def _read_shared(where: Path, run: Path, shared: Any, own: set[str]) -> dict[str, torch.Tensor]:
    """The frozen text encoder's tensors that ``where`` (a config.json) names, checked: a file
    of the run folder (a plain name), of the recorded digest, under the recorded prefix."""
    if not (isinstance(shared, dict) and isinstance(shared.get("file"), str)
            and _SHARED_NAME.fullmatch(shared["file"])
            and isinstance(shared.get("sha256"), str) and isinstance(shared.get("prefix"), str)):
        raise MsakitError(f"{where}: 'shared_weights' is malformed (a text_encoder-HASH"
                          ".safetensors of the run folder, its sha256 and prefix)")
    path = run / shared["file"]
    if not os.path.lexists(path):
        raise MsakitError(f"{path} does not exist: {where} keeps its frozen text encoder there "
                          "(copy the whole run folder, not only the seed's)")
    check_input(Input("checkpoint", path))
    if _digest(path) != shared["sha256"]:
        raise MsakitError(f"{path}: its content is not the one {where} records (sha256 "
                          "differs): a damaged or replaced file")
    tensors, _ = _read_tensors(path)
    stray = sorted(k for k in tensors if not k.startswith(shared["prefix"]) or k in own)
    if stray:
        raise MsakitError(f"{path}: holds {stray[0]}, outside the frozen text encoder's "
                          f"{shared['prefix']!r} (or also in the seed's weights)")
    return tensors
