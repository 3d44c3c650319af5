"""PyTorch DDP under ``torchrun``: process group set-up, global-batch gathers, rank-0 writes.

``torchrun --nproc_per_node N -m msakit train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we then
join a process group (nccl on GPUs, gloo on CPUs) with no extra flag. Each rank takes its
contiguous share of every global batch; contrastive losses gather the representations of all
ranks with gradients (``torch.distributed.nn.functional.all_gather``), so N ranks compute the
loss of the whole global batch exactly as one process would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


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

    def all_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a scalar over ranks (a detached copy)."""
        value = value.detach().clone()
        if self.enabled:
            dist.all_reduce(value)
            value /= self.world_size
        return value

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
        from torch.distributed.nn.functional import all_gather

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
