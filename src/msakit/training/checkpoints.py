"""Checkpoints read back as models: a seed's ``model.safetensors`` + ``config.json`` (or an
earlier ``best.pt``), found from a file, a seed folder or a run folder
(:func:`resolve_checkpoint`, :func:`run_seed_checkpoints`), checked and rebuilt into the model it
describes (:func:`load_checkpoint`: bounded by what the file stores, every tensor's shape
checked), a feature file's split checked against it (:func:`split_for`), and its predictions
and metrics (:meth:`LoadedCheckpoint.predictions`, :func:`evaluate_checkpoint`,
:func:`evaluate_seeds`).

The files themselves are written and read by :mod:`msakit.training.pretrained` (the format);
this module is what ``evaluate``, ``predict``, ``plot``, ``predict --video`` and ``analyze``
read a trained model with.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msakit.config import RunConfig
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError, warn
from msakit.core.safety import Input, check_input
from msakit.core.typecheck import checked_arguments
from msakit.data.batching import collate, epoch_plan
from msakit.data.missing import run_rates, with_missing_split
from msakit.data.mmsa import SplitData, check_dataset, load_feature_file
from msakit.encoders.text import check_text_length, text_encoder_from_config
from msakit.encoders.threads import on_parts, row_parts
from msakit.evaluation.metrics import metric_names, metric_values, undefined_warning
from msakit.evaluation.tables import with_summary
from msakit.extract.settings import check_record, describe, read_metadata
from msakit.models.base import Dims, MSAModel, first_non_finite
from msakit.training.device import amp_mode, autocast_settings
from msakit.training.inputs import build_model
from msakit.training.pretrained import WEIGHTS, best_weights_file, is_pretrained, read_checkpoint

INFERENCE_BATCH = 256
"""Clips per batch when a loaded checkpoint predicts (:meth:`LoadedCheckpoint.predictions`):
without gradients a batch keeps no activations for backward, so a larger batch than training's
costs little memory and gives the text encoder's matmuls more rows. Batches are trimmed to
their longest clip and the audio/vision encoders skip padding, so their size does not pad more
work; a model that reads padded frames is padded to the file's lengths anyway."""


@dataclass
class LoadedCheckpoint:
    model: MSAModel
    config: RunConfig
    dims: Dims
    state: dict[str, Any]
    path: Path = Path("checkpoint")

    def predictions(self, part: SplitData, *, batch_size: int = INFERENCE_BATCH,
                    keep: Any = None) -> np.ndarray:
        """The model's (N,) float32 predictions of ``part``, in split order: eval mode, no
        autograd (``torch.inference_mode``), the run's precision (``amp``), batches of
        ``batch_size`` clips in split order, no work on the host between batches. ``keep``,
        if given, is called with every batch's output (e.g. to keep representations), in
        split order.

        On a CPU with several PyTorch threads, each batch is cut into one part of clips per
        thread (at least :data:`MIN_PART_CLIPS` each) and every part is collated and predicted
        on its own thread with one intra-op thread (:func:`~msakit.encoders.threads.on_parts`):
        a clip's prediction depends on no other clip, and one thread per part keeps each
        part's small products and its attention in that core's cache with no barrier between
        threads (BENCHMARKS.md, "Two threads, second sitting"). ``keep`` then sees each part's
        output, in split order.

        The one place a loaded checkpoint predicts (``evaluate``, ``predict``, ``plot``,
        ``predict --video``, ``analyze``): every prediction is a finite number, checked once
        over the split, or one :class:`MsakitError` naming the checkpoint and the first sample
        (its position in the split) without one."""

        mode = amp_mode(self.config.amp, self.config.bf16)
        cast = autocast_settings("cpu", "off" if mode == "fp16" else mode)  # fp16: CUDA only
        model = self.model.eval()
        trim = not model.reads_padding()
        on_cpu = all(param.device.type == "cpu" for param in model.parameters())
        plan = epoch_plan(part, batch_size, seed=0, epoch=0, shuffle=False)

        def predict(indices: np.ndarray, clips: slice) -> Any:
            # autocast is per thread: entered in the thread that predicts
            with torch.autocast("cpu", dtype=cast.dtype, enabled=cast.enabled):
                return model(collate(part, indices[clips], trim))

        out = []
        with torch.inference_mode():
            for indices in plan:
                parts = (row_parts(len(indices), MIN_PART_CLIPS) if on_cpu
                         else [slice(0, len(indices))])
                for output in on_parts(functools.partial(predict, indices), parts):
                    out.append(output.prediction.detach().float().reshape(-1))
                    if keep is not None:
                        keep(output)
        predictions = torch.cat(out) if out else torch.zeros(0)
        _check_finite(self.path, predictions)
        return predictions.numpy()


MIN_PART_CLIPS = 16
"""Fewest clips a thread's part of a prediction batch gets (fewer clips stay one part: the
threads' start-up would cost more than the part)."""


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file (``model.safetensors``, its ``config.json``, a ``best.pt``), or a
    folder holding one: a seed's (``RUN/seed-S``) or a run's with one seed (``RUN``)."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise MsakitError(f"checkpoint {path} does not exist")
        return path
    if (path / WEIGHTS).is_file() or (path / "config.json").is_file():
        return path / WEIGHTS
    if (path / "best.pt").is_file():
        return path / "best.pt"
    found = sorted({p.parent for pattern in (f"seed-*/{WEIGHTS}", "seed-*/best.pt")
                    for p in path.glob(pattern)})
    if len(found) == 1:
        return best_weights_file(found[0]) or found[0] / WEIGHTS
    if not found:
        raise MsakitError(f"checkpoint {path} is a folder without {WEIGHTS} (or best.pt), "
                          "nor seed-*/ folders holding one")
    seeds = ", ".join(p.name for p in found)
    raise MsakitError(
        f"{path} holds several seeds ({seeds}); pass one, e.g. --checkpoint {found[0]}"
    )


def _describe_checkpoint(path: Path, state: Any) -> tuple[RunConfig, Dims, dict[str, Any]]:
    """The checkpoint's configuration, dims and text-encoder config, with their structure
    checked (keys, types, dims); one ``MsakitError`` line on any mismatch."""
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MsakitError(f"{path}: not an msakit checkpoint (no 'model' and 'config' entries)")
    for key, kind in (("model", dict), ("config", dict), ("dims", dict),
                      ("text_encoder_config", dict)):
        if not isinstance(state.get(key), kind):
            raise MsakitError(f"{path}: not an msakit checkpoint ('{key}' is missing or not a "
                              f"{kind.__name__})")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor)
               for k, v in state["model"].items()):
        raise MsakitError(f"{path}: 'model' is not a mapping of names to tensors")
    try:
        config = RunConfig.from_dict(state["config"])  # typed and checked once
        dims = Dims(**state["dims"])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for k, v in dims.to_dict().items() if not (k == "text_dim" and v is None)):
            raise ValueError(f"dims {dims.to_dict()}")
    except MsakitError as exc:
        raise MsakitError(f"{path}: its configuration is invalid ({exc})") from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise MsakitError(
            f"{path}: its configuration or dims are malformed ({type(exc).__name__}: {exc})"
        ) from None
    return config, dims, state["text_encoder_config"]


def _check_contents(path: Path, state: dict[str, Any]) -> None:
    """What a well-formed checkpoint holds beside its description: finite weights (a NaN
    weight makes every prediction NaN, hence no metric), and an extractor record with its
    structure (:func:`msakit.extract.settings.check_record`)."""

    bad = first_non_finite(state["model"])
    if bad is not None:
        raise MsakitError(f"{path}: weight {bad} holds NaN or infinite values; a model with "
                          "it predicts no number (a diverged or damaged checkpoint)")
    if state.get("extractor") is not None:

        check_record(state["extractor"], f"{path}: 'extractor'")


@checked_arguments
def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Rebuild a trained model from its checkpoint alone: a seed's folder
    (``model.safetensors`` + ``config.json``, read with no pickle at all) or a torch file such
    as an earlier ``best.pt`` (``weights_only=True``).

    ``path`` may also be a run folder (see :func:`resolve_checkpoint`).
    """
    path = resolve_checkpoint(path)
    if not is_pretrained(path):
        check_input(Input("checkpoint", path))  # a FIFO or a device: one line, not a hang
    state = read_checkpoint(path)  # checks each file it opens
    config, dims, encoder_config = _describe_checkpoint(path, state)
    _check_contents(path, state)
    try:
        # First without memory (the meta device), bounded by what the file stores: a small
        # file that declares a huge vocabulary, width or depth is refused before anything
        # is allocated; then for real, once every shape is known to be the checkpoint's.
        with torch.device("meta"), _described_within(path, state["model"]):
            described = build_model(config, dims, text_encoder_from_config(encoder_config))
        _check_fits(path, config, described, state["model"])
        del described
        model = build_model(config, dims, text_encoder_from_config(encoder_config))
        model.load_state_dict(state["model"], strict=False)
    except MsakitError:
        raise
    except Exception as exc:  # noqa: BLE001 - shapes, unknown settings: one line
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise MsakitError(
            f"{path}: weights do not fit the model it describes ({type(exc).__name__}: {first})"
        ) from None
    model.eval()
    return LoadedCheckpoint(model=model, config=config, dims=dims, state=state, path=path)


def _check_finite(path: Path, predictions: torch.Tensor) -> None:
    """Every prediction of a checkpoint's model is a finite number, or one ``MsakitError``
    naming the checkpoint and the first sample (its position in the split) without one."""
    finite = torch.isfinite(predictions)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0])
    raise MsakitError(f"{path}: the model predicts {float(predictions[first])} for sample "
                      f"{first} (position in the split): its weights are finite, its "
                      "computation is not")


BUILT_PER_STORED = 4
"""Building a model registers more tensors than it keeps (``nn.TransformerEncoder`` copies a
layer it then drops): building the model a checkpoint describes may register this many times
the tensors and values the checkpoint stores, plus :data:`UNSAVED_ELEMENTS` and
:data:`UNSAVED_TENSORS`, before it is refused."""
UNSAVED_ELEMENTS = 1 << 20
"""Tensor elements beyond that (buffers that are not saved, such as a text encoder's position
ids)."""
UNSAVED_TENSORS = 1024
"""Parameters and buffers beyond that."""


@contextmanager
def _described_within(path: Path, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """While a checkpoint's model is built: every parameter and buffer registered counts, and
    more elements or tensors than :data:`BUILT_PER_STORED` times those the checkpoint stores
    (plus :data:`UNSAVED_ELEMENTS`, :data:`UNSAVED_TENSORS`) stop the build with one line. The
    file's size thus bounds what its configuration (vocabulary, widths, layers, positions) may
    make msakit build."""
    from torch.nn.modules import module as nn_module

    stored = (sum(t.numel() for t in weights.values()), len(weights))
    limit = (BUILT_PER_STORED * stored[0] + UNSAVED_ELEMENTS,
             BUILT_PER_STORED * stored[1] + UNSAVED_TENSORS)
    seen = [0, 0]

    def count(_module, name: str, tensor) -> None:
        if tensor is None:
            return
        seen[0] += tensor.numel()
        seen[1] += 1
        if seen[0] > limit[0] or seen[1] > limit[1]:
            raise MsakitError(
                f"{path}: weights do not fit the model it describes: its configuration asks for "
                f"far more than the {stored[1]} tensors of {stored[0]} values it holds "
                f"(exceeded at '{name}', shape {tuple(tensor.shape)})"
            )

    hooks = [nn_module.register_module_parameter_registration_hook(count),
             nn_module.register_module_buffer_registration_hook(count)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _check_fits(path: Path, config: RunConfig, model: MSAModel,
                weights: dict[str, torch.Tensor]) -> None:
    """Every tensor of the (meta) ``model`` is in ``weights`` with its shape, and no other:
    the weights are exactly those of the model the checkpoint describes."""
    expected = model.state_dict()
    missing = [k for k in expected.keys() - weights.keys() if not k.endswith("position_ids")]
    wrong = [k for k in expected.keys() & weights.keys() if expected[k].shape != weights[k].shape]
    if missing or wrong or weights.keys() - expected.keys():
        detail = (f" ('{wrong[0]}' is {tuple(weights[wrong[0]].shape)}, the model's "
                  f"{tuple(expected[wrong[0]].shape)})" if wrong else "")
        raise MsakitError(
            f"{path}: weights do not fit the {config.model_name} model it describes{detail}"
        )


def split_for(
    ckpt: LoadedCheckpoint, data: str | os.PathLike, split: str | None, *,
    prediction: bool = False,
) -> SplitData:
    """One split of the feature file ``data``, loaded and checked against the checkpoint: the
    token ids against its text encoder's vocabulary, the feature sizes against its dims, the
    labels against its data set, the extractor settings against its training data's.
    ``prediction``: labels are optional and the file may hold one split
    (:func:`load_feature_file`); ``split`` None then takes the file's only split, else ``test``."""
    check_input(Input("data", Path(data)))
    vocab = ckpt.state["text_encoder_config"].get("vocab_size", 0)
    vocab = int(vocab) if isinstance(vocab, int) and vocab > 0 else None
    features = load_feature_file(str(data), vocab_size=vocab, prediction=prediction,
                                 text_features=ckpt.dims.text_dim is not None)
    if split is None:
        split = next(iter(features.splits)) if len(features.splits) == 1 else "test"
    if split not in features.splits:
        held = ", ".join(repr(s) for s in features.splits)
        raise MsakitError(f"{data}: no split {split!r} (the file holds {held})")
    check_text_length(features.text_len, ckpt.state["text_encoder_config"], str(data),
                      ckpt.config.text_encoder)
    if features.text_dim != ckpt.dims.text_dim:
        raise MsakitError(f"{data}: text features {features.text_dim} wide, the checkpoint's "
                          f"{ckpt.dims.text_dim}")
    _check_same_extractor(ckpt, data)  # first: it names both extractors (e.g. mediapipe, opencv)
    if (features.audio_dim, features.vision_dim) != (ckpt.dims.audio, ckpt.dims.vision):
        raise MsakitError(
            f"{data}: audio/vision feature sizes {features.audio_dim}/{features.vision_dim} do "
            f"not match the checkpoint's {ckpt.dims.audio}/{ckpt.dims.vision}"
        )
    spec = ckpt.config.spec
    check_dataset(features, spec, f"the checkpoint's data set ({spec.title})")
    return features.splits[split]


def _check_same_extractor(ckpt: LoadedCheckpoint, data: str | os.PathLike) -> None:
    """Features from `msakit extract` must come from the extractor settings the model saw."""

    trained = ckpt.state.get("extractor")
    given = read_metadata(data)
    if trained is None and given is None:
        return
    if trained is None or given is None or trained["settings"] != given["settings"]:
        def what(record: dict[str, Any] | None) -> str:
            return describe(record["settings"]) if record else "not from msakit extract"

        raise MsakitError(
            f"{data}: its features ({what(given)}) are not those the checkpoint was trained on "
            f"({what(trained)}); the model does not apply to them"
        )


def run_seed_checkpoints(path: str | os.PathLike) -> list[tuple[int | str, Path]]:
    """The best weights of every seed of a run folder that holds several seeds (a seed's
    ``model.safetensors``, or an earlier run's ``best.pt``), as ``(S, path)`` in seed order; an
    empty list for anything else (a checkpoint file, a seed folder, a run folder with one seed
    or none: :func:`resolve_checkpoint` reads those)."""
    path = Path(path)
    if not path.is_dir() or (path / WEIGHTS).is_file() or (path / "best.pt").is_file():
        return []
    found = []
    for folder in sorted({p.parent for pattern in (f"seed-*/{WEIGHTS}", "seed-*/best.pt")
                          for p in path.glob(pattern)}):
        label = folder.name.removeprefix("seed-")
        found.append((int(label) if label.isdigit() else label,
                      best_weights_file(folder) or folder / WEIGHTS))
    found.sort(key=lambda item: (isinstance(item[0], str), item[0]))
    return found if len(found) > 1 else []


def evaluate_seeds(
    seeds: list[tuple[int | str, Path]], data: str | os.PathLike, split: str
) -> list[dict[str, Any]]:
    """Every seed's metrics on ``split`` of ``data`` and their mean and std (the results table
    of training, :func:`msakit.evaluation.tables.with_summary`); the seeds must share a data
    set's metrics."""
    rows: list[dict[str, Any]] = []
    first: tuple[Path, DatasetSpec] | None = None
    for seed, path in seeds:
        ckpt = load_checkpoint(path)
        spec = ckpt.config.spec
        if first is not None and metric_names(spec) != metric_names(first[1]):
            raise MsakitError(
                f"{path}: trained on {spec.title}, {first[0]} on {first[1].title}; the seeds of "
                "one run folder share a data set (evaluate each checkpoint on its own)"
            )
        first = first or (path, spec)
        metrics = evaluate_checkpoint(ckpt, split_for(ckpt, data, split))
        warn(undefined_warning(metrics, f"{data} {split} split, seed {seed}"))
        rows.append({"seed": seed, **metrics})
    assert first is not None
    return with_summary(rows, first[1])


def evaluate_checkpoint(ckpt: LoadedCheckpoint, part: SplitData) -> dict[str, float]:
    """MMSA metrics of the checkpoint's predictions of ``part`` (labelled), under the run's
    missing-modality setting (``missing_rate``: the positions its test split lost in
    training)."""
    part = with_missing_split(part, run_rates(ckpt.config))
    return metric_values(ckpt.predictions(part), part.labels, ckpt.config.spec)

