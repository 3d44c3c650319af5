"""``msakit bench``: training throughput and memory, measured with the real training code.

The benchmark builds the model and the generic Trainer exactly as ``train`` does, runs a warm-up
of a few optimizer steps, then times every optimizer step of ``epochs`` epochs on the train split
(no validation) and reports samples/s, the median step time and the peak resident memory of the
process. ``--flops`` adds the machine's measured fp32 matmul FLOP/s and the share of it that a
text-encoder training step and the timed training steps reach (FLOPs of matmuls, counted by
``torch.utils.flop_counter``; a step's FLOPs are counted on the timed batches after the timing).
"""

from __future__ import annotations

import copy
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msakit import api
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError
from msakit.core.typecheck import checked_arguments
from msakit.data.batching import collate
from msakit.encoders.packed_text import run_text_encoder
from msakit.models.base import Dims
from msakit.training import distributed
from msakit.training.device import amp_mode
from msakit.training.inputs import build_model, load_encoder_and_data, run_stats
from msakit.training.trainer import Trainer


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_flops_per_s(n: int = 1024, repeats: int = 10) -> float:
    """The machine's fp32 matmul throughput (FLOP/s), best of ``repeats`` n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def _count_flops(work) -> float:
    """FLOPs (matmuls and convolutions, ``torch.utils.flop_counter``) that ``work()`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        work()
    return float(counter.get_total_flops())


def text_encoder_utilisation(
    encoder: torch.nn.Module, text: torch.Tensor, *, packed: bool, peak: float
) -> dict[str, float]:
    """FLOPs of one text-encoder training step (forward + backward, run as the model runs it:
    without padding tokens when ``packed``) and its share of the matmul ``peak`` (FLOP/s)."""
    encoder = copy.deepcopy(encoder).train()

    def step() -> None:
        encoder.zero_grad(set_to_none=True)
        out = run_text_encoder(encoder, text, packed=packed).last_hidden_state
        out.float().pow(2).mean().backward()

    flops = _count_flops(step)
    step()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    achieved = flops / statistics.median(times)
    return {
        "text_encoder_step_gflop": round(flops / 1e9, 3),
        "text_encoder_gflop_per_s": round(achieved / 1e9, 3),
        "text_encoder_share_of_matmul_peak": round(achieved / peak, 4),
    }


def _timed_plan(trainer: Trainer, epochs: int, max_steps: int | None) -> list[tuple[int, int]]:
    """(epoch, steps) of the timed loop: whole epochs, the last cut at ``max_steps`` in all."""
    timed, total = [], 0
    for epoch in range(epochs):
        steps = len(trainer._plan(epoch))
        if max_steps is not None:
            steps = min(steps, max_steps - total)
        if steps <= 0:
            break
        timed.append((epoch, steps))
        total += steps
    return timed


def step_flops(trainer: Trainer, timed: list[tuple[int, int]]) -> float:
    """FLOPs of the forward and backward passes of the timed steps' batches (the optimizer's
    element-wise update is not counted), recomputed on the same batches after the timing."""
    model = trainer.model

    def steps() -> None:
        for epoch, count in timed:
            plan = trainer._plan(epoch)[:count]
            for batch in trainer._batches(plan):
                model.zero_grad(set_to_none=True)
                model.compute_loss(model(batch), batch).loss.backward()
        model.zero_grad(set_to_none=True)

    model.train()
    return _count_flops(steps)


def _time_steps(trainer: Trainer, timed: list[tuple[int, int]], warmup_steps: int) -> float:
    """Run the warm-up, then the timed steps; returns the process CPU seconds they took."""
    trainer.train_epoch(0, max_steps=warmup_steps)  # warm-up: allocator, kernels, caches
    trainer.step_seconds.clear()
    trainer.step_samples.clear()
    cpu_start = time.process_time()
    for epoch, steps in timed:
        trainer.train_epoch(epoch, max_steps=steps)
    return time.process_time() - cpu_start


def _flops_report(
    trainer: Trainer, encoder: torch.nn.Module | None, timed: list[tuple[int, int]]
) -> dict[str, float]:
    """``--flops``: the machine's matmul peak, the text encoder's (models that read text
    features have none) and the whole step's share."""
    peak = matmul_flops_per_s()
    result = {"matmul_gflop_per_s": round(peak / 1e9, 3)}
    if encoder is not None:
        split = trainer.train
        text = collate(split, np.arange(min(trainer.config.batch_size, len(split)))).text
        packed = not trainer.model.reads_padding()
        result.update(text_encoder_utilisation(encoder, text, packed=packed, peak=peak))
    flops, seconds = step_flops(trainer, timed), sum(trainer.step_seconds)
    achieved = flops / seconds if seconds else 0.0
    result.update({
        "step_gflop": round(flops / 1e9 / max(1, len(trainer.step_seconds)), 3),
        "step_gflop_per_s": round(achieved / 1e9, 3),
        "step_share_of_matmul_peak": round(achieved / peak, 4),
    })
    return result


@checked_arguments
def bench(
    model: str,
    dataset: str | DatasetSpec,
    data: str | Path,
    *,
    batch: int | None = None,
    epochs: int = 1,
    text_encoder: str | None = None,
    overrides: list[str] | None = None,
    warmup_steps: int = 2,
    max_steps: int | None = None,
    flops: bool = False,
    seed: int = 0,
    preset: str = "paper",
) -> dict[str, Any]:
    """Train ``model`` on ``data``'s train split and measure it; returns the JSON fields.
    ``max_steps`` (when given) must be at least 1 and ``warmup_steps`` at least 0: a benchmark
    of no step measures nothing."""
    _check_counts(max_steps=max_steps, warmup_steps=warmup_steps)
    config = api.build_config(
        model, dataset, text_encoder=text_encoder, epochs=epochs, batch=batch,
        overrides=overrides, preset=preset,
    )
    encoder, features = load_encoder_and_data(config, data)
    torch.manual_seed(seed)
    net = build_model(config, Dims.of(features), copy.deepcopy(encoder),
                      stats=run_stats(config, features))
    ctx = distributed.setup()
    trainer = Trainer(net, config, features.splits["train"], features.splits["valid"], seed=seed,
                      dist=ctx, quiet=True)
    trainer.prepare()
    timed = _timed_plan(trainer, epochs, max_steps)
    cpu_seconds = _time_steps(trainer, timed, warmup_steps)
    result = {"model": model, "dataset": config.dataset.name, "data": str(data), **_measures(
        trainer, cpu_seconds), "overrides": list(overrides or [])}
    if flops:
        result.update(_flops_report(trainer, encoder, timed))
    distributed.teardown(ctx)
    return result


def _check_counts(*, max_steps: int | None, warmup_steps: int) -> None:
    if max_steps is not None and max_steps < 1:
        raise MsakitError(f"--max-steps must be at least 1, got {max_steps} (a benchmark of no "
                          "step measures nothing)")
    if warmup_steps < 0:
        raise MsakitError(f"--warmup-steps must be at least 0, got {warmup_steps}")


def _measures(trainer: Trainer, cpu_seconds: float) -> dict[str, Any]:
    """The JSON fields of a timed run: its settings, throughput and memory."""
    config = trainer.config
    seconds, samples = sum(trainer.step_seconds), sum(trainer.step_samples)
    return {
        "preset": config.preset,
        "text_encoder": config.text_encoder,
        "batch": config.batch_size,
        "epochs": config.epochs,
        "sampler": config.sampler,
        "bf16": config.bf16,
        "amp": amp_mode(config.amp, config.bf16),
        "reuse_memory": config.reuse_memory,
        "fast_dropout": config.fast_dropout,
        "steps": len(trainer.step_seconds),
        "samples": samples,
        "samples_per_s": round(samples / seconds, 3) if seconds else 0.0,
        "median_step_s": round(statistics.median(trainer.step_seconds), 4)
        if trainer.step_seconds else 0.0,
        # CPU time of this process per sample: steadier than wall time on a shared machine.
        "cpu_s_per_sample": round(cpu_seconds / samples, 5) if samples else 0.0,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
