"""The Python API behind every ``msakit`` command: train, evaluate, predict, synth, demo.

Each function validates all of its input before it writes anything, and raises
:class:`msakit.errors.MsakitError` (one line) for bad input.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msakit.config import RunConfig, apply_overrides
from msakit.config.presets import preset
from msakit.data.mmsa import FeatureFile, SplitData, load_feature_file
from msakit.encoders.text import (
    DEFAULT_TEXT_ENCODER,
    text_encoder_from_config,
)
from msakit.errors import MsakitError
from msakit.metrics import metric_names
from msakit.models.base import Dims, MSAModel
from msakit.training import distributed
from msakit.training.inputs import (
    build_model,
    check_output_folder,
    prepare_run,
    write_run_config,
)
from msakit.training.trainer import Trainer, atomic_save, evaluate_model

__all__ = ["train", "evaluate", "predict", "load_checkpoint", "build_config", "synth", "demo"]


# --------------------------------------------------------------------------- building blocks
def build_config(
    model: str,
    dataset: str,
    *,
    text_encoder: str | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> RunConfig:
    """The preset of (model, dataset) with the command line's choices applied."""
    config = preset(model, dataset)
    if text_encoder is not None:
        config.text_encoder = text_encoder
    if seeds:
        config.seeds = [int(s) for s in seeds]
    if epochs is not None:
        config.epochs = int(epochs)
    if batch is not None:
        config.batch_size = int(batch)
    return apply_overrides(config, overrides or [])


def dims_of(data: FeatureFile) -> Dims:
    return Dims.of(data)


def load_data(path: str | os.PathLike, vocab_size: int | None) -> FeatureFile:
    return load_feature_file(str(path), vocab_size=vocab_size)


# --------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    out: Path
    rows: list[dict[str, Any]]
    """One row per seed (``seed`` then the test metrics), then the ``mean`` and ``std`` rows."""


def train(
    model: str = "clgsi",
    dataset: str = "mosi",
    data: str | os.PathLike = "",
    *,
    text_encoder: str | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    out: str | os.PathLike = "runs/msakit",
    overrides: list[str] | dict[str, Any] | None = None,
    adapters: str | os.PathLike | None = None,
    log_steps: str | os.PathLike | None = None,
    resume: bool = False,
    quiet: bool = False,
    config: RunConfig | None = None,
    hooks: Any = None,
) -> TrainResult:
    """Train ``model`` on an MMSA feature file for every seed; write the run folder.

    Writes ``out/config.yaml``, ``out/seed-S/best.pt`` (``{"model": state_dict, "config": ...}``,
    loadable with ``weights_only=True``), ``out/seed-S/last.pt`` (exact resume),
    ``out/seed-S/history.json`` and ``out/results.csv`` (one row per seed with the test metrics
    under MMSA's names, then the ``mean`` and ``std`` rows).
    """
    ctx = distributed.setup()
    try:
        return _train(
            ctx, model, dataset, data, text_encoder, seeds, epochs, batch, Path(out), overrides,
            adapters, log_steps, resume, quiet, config, hooks,
        )
    finally:
        distributed.teardown(ctx)


def _train(ctx, model, dataset, data, text_encoder, seeds, epochs, batch, out, overrides,
           adapters, log_steps, resume, quiet, config, hooks) -> TrainResult:
    if config is None:
        config = build_config(
            model, dataset, text_encoder=text_encoder, seeds=seeds, epochs=epochs, batch=batch,
            overrides=overrides,
        )
    if resume:
        _check_resume_config(out, config)
    inputs = prepare_run(config, data, out, ctx, checkpoint_format="msakit-checkpoint-1")
    encoder, features, dims = inputs.encoder, inputs.features, inputs.dims
    # Build once to surface configuration errors before anything is written.
    probe = build_model(config, dims, copy.deepcopy(encoder))
    adapter_state = None
    if adapters is not None:
        from msakit.training.stages import read_adapters

        adapter_state = read_adapters(adapters, config, dims, probe, encoder)
    elif hasattr(probe, "announce_without_external") and not quiet and ctx.is_main:
        probe.announce_without_external()
    del probe
    pretrained = copy.deepcopy(encoder.state_dict())
    write_run_config(config, out, ctx)
    rows = []
    for seed in config.seeds:
        torch.manual_seed(seed)
        encoder.load_state_dict(pretrained)
        net = build_model(config, dims, copy.deepcopy(encoder))
        if adapter_state is not None:
            from msakit.training.stages import install_adapters

            install_adapters(net, adapter_state)
        run_dir = out / f"seed-{seed}"
        trainer = Trainer(
            model=net,
            config=config,
            train=features.splits["train"],
            valid=features.splits["valid"],
            run_dir=run_dir,
            seed=seed,
            dist=ctx,
            quiet=quiet,
            log_steps=Path(log_steps) if log_steps else None,
            resume=resume,
            tensorboard=out / "tensorboard" / f"seed-{seed}",
            checkpoint_extra=inputs.checkpoint_extra,
            **({"hooks": hooks} if hooks is not None else {}),
        )
        trainer.fit()
        ctx.barrier()
        best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(best["model"])
        result = evaluate_model(
            net, features.splits["test"], config.dataset, config.batch_size, ctx.device,
            bf16=config.bf16, dist=ctx,
        )
        rows.append({"seed": seed, **result.metrics})
        if ctx.is_main:
            (run_dir / "history.json").write_text(json.dumps(trainer.history, indent=1))
            _write_results(out / "results.csv", rows, config.dataset)
    return TrainResult(out=out, rows=_with_summary(rows, config.dataset))


def _check_resume_config(out: Path, config: RunConfig) -> None:
    """--resume continues a run only with the settings it was started with (seeds aside)."""
    import yaml

    path = out / "config.yaml"
    if not path.is_file():
        return
    def flat(cfg: dict[str, Any]) -> dict[str, Any]:  # --set names: lr.text, gamma, ...
        out = {k: v for k, v in cfg.items() if not isinstance(v, dict) and k != "seeds"}
        for key, value in cfg.items():
            if isinstance(value, dict):
                out.update({(k if key == "model" else f"{key}.{k}"): v for k, v in value.items()})
        return out

    old = flat(yaml.safe_load(path.read_text()) or {})
    new = flat(yaml.safe_load(config.to_yaml()))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise MsakitError(
            f"{path}: the run was started with other settings ({', '.join(changed)}); resume "
            "with the same options, or train into a new --out"
        )


def _with_summary(rows: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    names = metric_names(dataset)
    values = np.array([[row[k] for k in names] for row in rows], dtype=np.float64)
    mean = dict(zip(names, values.mean(0).round(4).tolist(), strict=True))
    std = dict(zip(names, values.std(0).round(4).tolist(), strict=True))
    return [*rows, {"seed": "mean", **mean}, {"seed": "std", **std}]


def _write_results(path: Path, rows: list[dict[str, Any]], dataset: str) -> None:
    names = metric_names(dataset)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["seed", *names], lineterminator="\n")
    writer.writeheader()
    for row in _with_summary(rows, dataset):
        writer.writerow({k: row[k] for k in ["seed", *names]})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- checkpoints
@dataclass
class LoadedCheckpoint:
    model: MSAModel
    config: RunConfig
    dims: Dims
    state: dict[str, Any]


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Rebuild a trained model from its checkpoint alone (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise MsakitError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        kind = type(exc).__name__
        raise MsakitError(f"{path}: not a readable msakit checkpoint ({kind})") from exc
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MsakitError(f"{path}: not an msakit checkpoint (no 'model' and 'config' entries)")
    config = RunConfig.from_dict(state["config"])
    dims = Dims(**state["dims"])
    encoder = text_encoder_from_config(state["text_encoder_config"])
    model = build_model(config, dims, encoder)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise MsakitError(
            f"{path}: weights do not fit the {config.model_name} model it describes"
        )
    model.eval()
    return LoadedCheckpoint(model=model, config=config, dims=dims, state=state)


def _split_for(ckpt: LoadedCheckpoint, data: str | os.PathLike, split: str) -> SplitData:
    vocab = int(ckpt.state["text_encoder_config"].get("vocab_size", 0)) or None
    features = load_data(data, vocab)
    if split not in features.splits:
        raise MsakitError(f"{data}: no split {split!r}")
    if (features.audio_dim, features.vision_dim) != (ckpt.dims.audio, ckpt.dims.vision):
        raise MsakitError(
            f"{data}: audio/vision feature sizes {features.audio_dim}/{features.vision_dim} do "
            f"not match the checkpoint's {ckpt.dims.audio}/{ckpt.dims.vision}"
        )
    return features.splits[split]


def evaluate(
    checkpoint: str | os.PathLike, data: str | os.PathLike, split: str = "test"
) -> dict[str, float]:
    """MMSA metrics of a checkpoint on one split of a feature file."""
    ckpt = load_checkpoint(checkpoint)
    part = _split_for(ckpt, data, split)
    result = evaluate_model(ckpt.model, part, ckpt.config.dataset, ckpt.config.batch_size,
                            torch.device("cpu"), bf16=ckpt.config.bf16)
    return result.metrics


def predict(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    out: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Predictions of a checkpoint on one split; written as CSV (id, prediction, label)."""
    ckpt = load_checkpoint(checkpoint)
    part = _split_for(ckpt, data, split)
    if out is not None:
        check_output_folder(Path(out).parent if Path(out).parent != Path("") else Path("."))
    result = evaluate_model(ckpt.model, part, ckpt.config.dataset, ckpt.config.batch_size,
                            torch.device("cpu"), bf16=ckpt.config.bf16)
    rows = [
        {"id": str(i), "prediction": float(p), "label": float(y)}
        for i, p, y in zip(part.ids, result.predictions, result.labels, strict=True)
    ]
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["id", "prediction", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, out)
    return rows


# --------------------------------------------------------------------------- synth and demo
def synth(like: str, n: tuple[int, int, int], out: str | os.PathLike, seed: int = 0) -> Path:
    """Write a synthetic MMSA feature file shaped like ``like`` (mosi, mosei, sims)."""
    from msakit.data.synthetic import write_synthetic

    if like not in ("mosi", "mosei", "sims"):
        raise MsakitError(f"--like must be mosi, mosei or sims, got {like!r}")
    if min(n) < 1:
        raise MsakitError(f"every split needs at least one sample, got {' '.join(map(str, n))}")
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise MsakitError(f"folder {out.parent} does not exist")
    write_synthetic(str(out), like, *n, seed=seed)
    return out


DEMO_SIZES = (256, 64, 96)


def demo(
    out: str | os.PathLike | None = None, quiet: bool = False, overrides: list[str] | None = None
) -> TrainResult:
    """Train CLGSI on built-in synthetic MOSI-shaped data with the packaged text encoder;
    ``overrides`` (``key=value``) come after the demo's own."""
    workdir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="msakit-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    from msakit.data.mmsa import convert_to_npz

    pickled = synth("mosi", DEMO_SIZES, workdir / "synthetic_mosi.pkl", seed=0)
    data = workdir / "synthetic_mosi.npz"
    convert_to_npz(pickled, data)
    return train(
        "clgsi",
        "mosi",
        data,
        text_encoder=DEFAULT_TEXT_ENCODER,
        seeds=[1, 2],
        epochs=4,
        batch=32,
        out=workdir / "run",
        overrides=["early_stop=6", *(overrides or [])],
        quiet=quiet,
    )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_save(payload, path)
