"""PyTorch DDP under ``torchrun``: process group set-up, global-batch gathers, rank-0 writes.

``torchrun --nproc_per_node N -m msakit train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we then
join a process group (nccl on GPUs, gloo on CPUs) with no extra flag. Each rank takes its
contiguous share of every global batch; contrastive losses gather the representations of all
ranks with gradients (``torch.distributed.nn.functional.all_gather``), so N ranks compute the
loss of the whole global batch exactly as one process would. BatchNorm layers normalise with
the statistics of the global batch: ``nn.SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm` (the
same computation over any backend, gloo included) on CPUs.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().clone()
        if self.enabled:
            dist.all_reduce(value)
        return value

    def gatherer(self, sizes: list[int]):
        """A function concatenating a (n_rank, ...) tensor over ranks, with gradients.

        ``sizes`` are every rank's share of the current global batch (known on every rank from
        the shared batch plan), so uneven shares are padded for the collective and cut after.
        """
        if not self.enabled:
            return lambda x: x
        biggest = max(sizes)

        def gather(x: torch.Tensor) -> torch.Tensor:
            pad = biggest - x.size(0)
            if pad:
                x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
            parts = all_gather(x)
            return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

        return gather

    def gather_objects(self, obj):
        """Every rank's Python object, as a list (rank order)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


# torch.distributed.nn.functional's collectives have gradients and run on gloo as on nccl; they
# announce a future replacement with a FutureWarning, nothing for a user to act on.
def all_gather(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's ``x`` (same shape on every rank), with gradients flowing back to each rank."""
    from torch.distributed.nn.functional import all_gather as gather_with_grad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return gather_with_grad(x)


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks, with gradients (the backward pass sums over ranks too)."""
    from torch.distributed.nn.functional import all_reduce as reduce_with_grad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return reduce_with_grad(x)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all ranks, on any backend (``nn.SyncBatchNorm``'s
    computation, which PyTorch only runs on GPUs).

    In training, the per-channel mean and (biased) variance are those of the samples of every
    rank, each rank's share of any size, from two sums all-reduced with gradients; running
    statistics are updated with the unbiased global variance, as ``nn.BatchNorm`` does. Outside
    training, or without a process group, this is plain BatchNorm. Parameter and buffer names
    are BatchNorm's, so state dicts are interchangeable.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, *) -> (N, C, *)."""
        self._check_input_dim(x)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dtype, x = x.dtype, x.float()  # statistics in float32, as SyncBatchNorm keeps them
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_full((1,), x.numel() / max(1, x.size(1)))
        sums = all_reduce(torch.cat([x.sum(dims), count]))  # (C + 1,)
        total = sums[-1]
        mean = sums[:-1] / total  # (C,)
        centered = x - mean.view(shape)
        var = all_reduce(centered.pow(2).sum(dims)) / total  # biased, as BatchNorm normalises
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            # the buffers that track_running_stats made
            assert self.num_batches_tracked is not None and self.running_mean is not None
            assert self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm of ``module`` normalise over the global batch (in place).

    GPUs: ``nn.SyncBatchNorm``. Other devices: :class:`GlobalBatchNorm`. Parameters and buffers
    are shared with the layers replaced, so optimisers and state dict names are unchanged.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats,
            )
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """``model`` with global-batch BatchNorm (:func:`sync_batchnorm`), wrapped in DDP.

    ``find_unused_parameters``: a model may leave parameters unused (CLGSI never uses BERT's
    pooler). ``static_graph`` would skip that search at every step, but it does not compose with
    the collectives inside the loss's backward pass (gradients go wrong from the second step).
    Synchronised BatchNorm statistics are the same on every rank, so buffers are not broadcast
    before each forward pass.
    """
    ddp = nn.parallel.DistributedDataParallel
    no_buffer_sync: dict[str, Any] = (
        {"forward_sync_buffers": False}  # newer PyTorch deprecates broadcast_buffers
        if "forward_sync_buffers" in inspect.signature(ddp).parameters
        else {"broadcast_buffers": False}
    )
    return ddp(
        sync_batchnorm(model, device),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
        **no_buffer_sync,
    )


def setup() -> DistContext:
    """Join the torchrun process group if launched by torchrun; otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
