"""``msakit bench``: training throughput and memory, measured with the real training code.

The benchmark builds the model and the generic Trainer exactly as ``train`` does, runs a warm-up
of a few optimizer steps, then times every optimizer step of ``epochs`` epochs on the train split
(no validation) and reports samples/s, the median step time and the peak resident memory of the
process. ``--flops`` adds the share of the machine's measured matmul FLOP/s that a text-encoder
training step reaches (FLOPs counted by ``torch.utils.flop_counter``).
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
from msakit.data.batching import collate
from msakit.encoders.text import bert_inputs
from msakit.training import distributed
from msakit.training.device import amp_mode
from msakit.training.inputs import load_encoder_and_data
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


def text_encoder_utilisation(encoder: torch.nn.Module, text: torch.Tensor) -> dict[str, float]:
    """FLOPs of one text-encoder training step (forward + backward) and the share of matmul peak."""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = copy.deepcopy(encoder).train()
    inputs = bert_inputs(text)

    def step() -> None:
        encoder.zero_grad(set_to_none=True)
        encoder(**inputs).last_hidden_state.float().pow(2).mean().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = float(counter.get_total_flops())
    step()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    achieved = flops / statistics.median(times)
    peak = matmul_flops_per_s()
    return {
        "text_encoder_step_gflop": round(flops / 1e9, 3),
        "text_encoder_gflop_per_s": round(achieved / 1e9, 3),
        "matmul_gflop_per_s": round(peak / 1e9, 3),
        "text_encoder_share_of_matmul_peak": round(achieved / peak, 4),
    }


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
    """Train ``model`` on ``data``'s train split and measure it; returns the JSON fields."""
    config = api.build_config(
        model, dataset, text_encoder=text_encoder, epochs=epochs, batch=batch,
        overrides=overrides, preset=preset,
    )
    encoder, features = load_encoder_and_data(config, data)
    dims = api.dims_of(features)
    torch.manual_seed(seed)
    net = api.build_model(config, dims, copy.deepcopy(encoder))
    ctx = distributed.setup()
    trainer = Trainer(net, config, features.splits["train"], features.splits["valid"], seed=seed,
                      dist=ctx, quiet=True)
    trainer.prepare()
    trainer.train_epoch(0, max_steps=warmup_steps)  # warm-up: allocator, kernels, caches
    trainer.step_seconds.clear()
    trainer.step_samples.clear()
    cpu_start = time.process_time()
    for epoch in range(epochs):
        remaining = None if max_steps is None else max_steps - len(trainer.step_seconds)
        if remaining is not None and remaining <= 0:
            break
        trainer.train_epoch(epoch, max_steps=remaining)
    cpu_seconds = time.process_time() - cpu_start
    seconds, samples = sum(trainer.step_seconds), sum(trainer.step_samples)
    result: dict[str, Any] = {
        "model": model,
        "dataset": config.dataset,
        "data": str(data),
        "preset": config.preset,
        "text_encoder": config.text_encoder,
        "batch": config.batch_size,
        "epochs": epochs,
        "sampler": config.sampler,
        "bf16": config.bf16,
        "amp": amp_mode(config.amp, config.bf16),
        "reuse_memory": config.reuse_memory,
        "fast_dropout": config.fast_dropout,
        "overrides": list(overrides or []),
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
    if flops:
        split = features.splits["train"]
        text = collate(split, np.arange(min(config.batch_size, len(split))))["text"]
        result.update(text_encoder_utilisation(encoder, text))
    distributed.teardown(ctx)
    return result
