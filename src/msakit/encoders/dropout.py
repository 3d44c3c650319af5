"""Dropout with NumPy-drawn masks, for CPU training.

PyTorch's CPU Bernoulli sampler (``nn.Dropout``) was the largest single cost of a CPU training
step at MOSI sizes: the audio/vision feed-forward blocks drop (frames x 2048) activations and
attention drops (L x L) weights of every head. Here the same inverted dropout draws its mask as
16-bit integers from NumPy's PCG64 (16-bit slices of its raw 64-bit output, in two fixed halves
filled side by side), seeded from torch's RNG at every call, so runs stay reproducible from the
seed and resumable. p is rounded to a multiple of 1/65536 (0.1 -> 0.1000061) and the scale uses
that p. On GPUs and in eval mode every function here is PyTorch's own dropout.

Nothing here acts at import: a model gets the fast dropout only when asked
(:func:`use_fast_dropout`, which the Trainer calls on CPUs with ``fast_dropout=true``), and the
mask-drawing threads (:mod:`msakit.encoders.threads`, whose fork hook makes a forked child
start its own) start on the first large mask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from msakit.encoders.threads import in_worker, on_pool

# Masks are drawn as 16-bit integers: p is rounded to a multiple of 1/65536.
_MASK_LEVELS = 65536
_MASK_STREAMS = 2  # fixed, so a mask never depends on the machine's thread count
_BLOCK = 1 << 15  # elements per draw: a multiple of 4 (four draws per raw 64-bit output)


def threshold_and_scale(p: float) -> tuple[int, float]:
    """p as a count of 16-bit levels (dropped where the draw is below it) and 1 / (1 - p)."""
    threshold = round(p * _MASK_LEVELS)
    return threshold, 1.0 / (1.0 - threshold / _MASK_LEVELS)


def _walk(
    seed: np.random.SeedSequence, out: np.ndarray, threshold: int,
    apply: Callable[[np.ndarray, np.ndarray], None],
) -> None:
    """Draw one 16-bit integer per element of the flat ``out`` (16-bit slices of PCG64's raw
    64-bit outputs, in order) and call ``apply(block of out, kept)`` block by block, so the
    draws stay in cache. The draws do not depend on the block size."""
    generator = np.random.PCG64(seed)
    kept = np.empty(min(_BLOCK, out.size), dtype=np.bool_)
    for start in range(0, out.size, _BLOCK):
        block = out[start : start + _BLOCK]
        raw = generator.random_raw((block.size + 3) // 4).view(np.uint16)[: block.size]
        np.greater_equal(raw, threshold, out=kept[: block.size])
        apply(block, kept[: block.size])


def _each_stream(
    out: np.ndarray, threshold: int, apply: Callable[[np.ndarray, np.ndarray], None]
) -> None:
    """:func:`_walk` over the two fixed halves of ``out`` with two PCG64 streams spawned from a
    seed drawn from torch's RNG, side by side (NumPy releases the GIL while it fills)."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    streams = np.random.SeedSequence(seed).spawn(_MASK_STREAMS)
    parts = np.array_split(out, _MASK_STREAMS)
    if out.size < 1 << 16 or in_worker():  # a pool thread fills its own
        for stream, part in zip(streams, parts, strict=True):
            _walk(stream, part, threshold, apply)
        return
    on_pool([functools.partial(_walk, stream, part, threshold, apply)
             for stream, part in zip(streams, parts, strict=True)])


def dropout_multiplier(shape: tuple[int, ...], p: float) -> torch.Tensor:
    """A float32 tensor of ``shape`` holding 0 (dropped, probability p) or 1 / (1 - p) (kept).

    The generator is seeded from torch's RNG, so masks are reproducible and resumable from the
    run's seed, and the same on any machine.
    """
    threshold, scale = threshold_and_scale(p)
    out = np.empty(math.prod(shape), dtype=np.float32)
    factor = np.float32(scale)

    def fill(block: np.ndarray, kept: np.ndarray) -> None:
        np.multiply(kept, factor, out=block)

    _each_stream(out, threshold, fill)
    return torch.from_numpy(out).view(shape)


def relu_dropout_(x: torch.Tensor, p: float) -> float:
    """In place: x = relu(x) * kept, kept ~ Bernoulli(1 - p) drawn like
    :func:`dropout_multiplier`; returns the scale 1 / (1 - p), left for the caller to apply.

    ``x`` is a float32 CPU tensor (anything else is a ``ValueError``). A contiguous ``x`` is
    changed in one pass, block by block, through a NumPy view of its memory; a non-contiguous
    one (whose NumPy reshape would be a copy) is worked on as a contiguous copy written back,
    with the same mask as a contiguous tensor of the same values would get."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        raise ValueError(
            f"relu_dropout_ needs a float32 CPU tensor, got {x.dtype} on {x.device.type}"
        )
    if not x.is_contiguous():
        work = x.detach().contiguous()
        scale = relu_dropout_(work, p)
        x.detach().copy_(work)
        return scale
    threshold, scale = threshold_and_scale(p)
    flat = x.detach().numpy().reshape(-1)

    def apply(block: np.ndarray, kept: np.ndarray) -> None:
        np.maximum(block, 0.0, out=block)
        np.multiply(block, kept, out=block)

    _each_stream(flat, threshold, apply)
    return scale


class _Multiply(torch.autograd.Function):
    """x * m for a constant multiplier ``m`` (the dropout mask), saving only ``m``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(multiplier)
        return x * multiplier

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode inverted dropout with a NumPy-drawn mask (see :func:`dropout_multiplier`);
    tensors of other dtypes than float32 (bf16 autocast) take ``F.dropout``."""
    if x.dtype != torch.float32:
        return F.dropout(x, p, training=True)
    return _Multiply.apply(x, dropout_multiplier(tuple(x.shape), p))


class FastDropout(nn.Dropout):
    """Inverted dropout whose mask, on CPUs, comes from NumPy's PCG64 generator.

    The same operation as ``nn.Dropout``: each element is kept with probability 1 - p and
    scaled by 1 / (1 - p). PyTorch's CPU Bernoulli sampler was the single largest cost of a
    training step; NumPy fills 16-bit random integers several times faster
    (:func:`dropout_multiplier`).
    The generator is seeded from torch's RNG at every call, so runs stay reproducible from the
    seed and resumable. p is rounded to a multiple of 1/65536 (0.1 -> 0.1000061) and the scale
    uses that p. On GPUs, in eval mode and on other dtypes than float32 (bf16 autocast) this is
    ``F.dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training)
        return fast_dropout(x, self.p)


def use_fast_dropout(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch the dropouts inside ``model`` (its text encoder's too) to the fast ones, or back.

    ``enabled``: every plain ``nn.Dropout`` module of ``model`` becomes a :class:`FastDropout`
    with the same p, and every module with a ``fast_dropout`` attribute (msakit's
    :class:`~msakit.encoders.sequence.PackedEncoderLayer`, whose fused feed-forward and
    attention draw their own masks) has it set to True. ``enabled=False`` undoes both. Only
    ``model``'s own submodules change (a module shared with another model changes for both);
    returns ``model``.
    """
    for module in list(model.modules()):
        if isinstance(getattr(module, "fast_dropout", None), bool):
            # torch types a module's attributes as Tensor | Module; this one is a bool
            module.fast_dropout = enabled  # type: ignore[assignment]
        for name, child in module.named_children():
            if enabled and type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace))
            elif not enabled and type(child) is FastDropout:
                setattr(module, name, nn.Dropout(child.p, child.inplace))
    return model


def uses_fast_dropout(model: nn.Module) -> bool:
    """True when some dropout of ``model`` is the fast one (a FastDropout module or a layer
    with ``fast_dropout`` on)."""
    return any(
        type(m) is FastDropout or getattr(m, "fast_dropout", None) is True
        for m in model.modules()
    )
