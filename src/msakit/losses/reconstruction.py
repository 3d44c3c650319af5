"""TFR-Net's reconstruction loss (Yuan et al., ACM MM 2021), as MMSA computes it (``RECLoss`` in
``models/missingTask/TFR_NET/model.py``).

A reconstructed sequence is compared with the complete one on the positions the missing-modality
protocol dropped (``mask`` 1 there, 0 elsewhere; :mod:`msakit.data.missing`): both are
multiplied by the mask, and the summed loss is divided by the number of masked entries (the
mask's sum over positions *and* features) + 1e-4. ``combine`` (MMSA's default) adds
``sim_weight`` x the central moment discrepancy of the two masked sequences (every position of
the batch a row; square roots with 1e-12 added, as MMSA's ``CMD``), divided by the same count.
Plain functions, no model imports.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from msakit.losses.misa import central_moment_discrepancy

RECONSTRUCTION_KINDS = ("combine", "smooth_l1", "mse", "cmd")
"""MMSA's ``recloss_type``: ``combine`` (smooth L1 + CMD), ``SmoothL1Loss``, ``MSELoss``,
``cmd``."""
COUNT_EPS = 1e-4
"""Added to the count of masked entries (MMSA's ``self.eps``)."""
CMD_EPS = 1e-12
"""Added under each square root of MMSA's CMD."""
CMD_MOMENTS = 3


def _cmd(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """MMSA's CMD of two (..., D) tensors, every position a row."""
    return central_moment_discrepancy(x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1]),
                                      CMD_MOMENTS, eps=CMD_EPS)


def masked_reconstruction_loss(
    predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, kind: str = "combine",
    sim_weight: float = 5.0,
) -> torch.Tensor:
    """The reconstruction loss of (B, L, D) ``predicted`` against ``target`` on the positions
    where the (B, L) ``mask`` is 1 (module docstring); ``kind`` one of
    :data:`RECONSTRUCTION_KINDS`."""
    if kind not in RECONSTRUCTION_KINDS:
        raise ValueError(f"reconstruction loss {kind!r}: choose {', '.join(RECONSTRUCTION_KINDS)}")
    full = mask.unsqueeze(-1).expand_as(predicted).to(predicted.dtype)
    a, b = predicted * full, target * full
    count = full.sum() + COUNT_EPS
    if kind == "cmd":
        return _cmd(a, b) / count
    if kind == "mse":
        return F.mse_loss(a, b, reduction="sum") / count
    loss = F.smooth_l1_loss(a, b, reduction="sum") / count
    if kind == "combine" and sim_weight != 0:
        loss = loss + sim_weight * _cmd(a, b) / count
    return loss
