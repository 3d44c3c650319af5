"""MISA's auxiliary losses (Hazarika et al., ACM MM 2020, Sec. 3.3), as MMSA computes them.

Plain functions of (B, d) representation batches; no model imports.

* :func:`central_moment_discrepancy` (L_sim with CMD, eq. 5): the distance of the means plus the
  distances of the central moments of order 2..K, each an L2 norm over the d features.
  MMSA (``trains/singleTask/MISA.py``, class ``CMD``) leaves out the paper's 1/|b-a|^k range
  factors (the sigmoid outputs lie in [0, 1], so |b - a| = 1 and the two agree).
* :func:`difference_loss` (L_diff, eq. 6): the squared Frobenius norm of H1^T H2, here as MMSA
  computes it: each batch is centred over the batch, every row divided by its (detached) L2
  norm + 1e-6, and the *mean* of the squared entries of the d x d product is taken.
* :func:`reconstruction_loss` (L_recon, eq. 7): the mean squared error over all entries.
"""

from __future__ import annotations

import torch

DIFF_EPS = 1e-6
"""Added to each row norm in :func:`difference_loss` (MMSA's ``DiffLoss``)."""


def central_moment_discrepancy(x1: torch.Tensor, x2: torch.Tensor, moments: int, *,
                               eps: float = 0.0) -> torch.Tensor:
    """CMD_K of two (B, d) batches: ||E(x1) - E(x2)|| + sum_{k=2..K} ||c_k(x1) - c_k(x2)||,
    with c_k the k-th central moment per feature (means over the batch); ``eps`` is added
    under each square root (MISA's CMD: none; TFR-Net's: 1e-12)."""
    mean1, mean2 = x1.mean(0), x2.mean(0)
    centred1, centred2 = x1 - mean1, x2 - mean2
    total = ((mean1 - mean2).pow(2).sum() + eps).sqrt()
    for k in range(2, moments + 1):
        gap = centred1.pow(k).mean(0) - centred2.pow(k).mean(0)
        total = total + (gap.pow(2).sum() + eps).sqrt()
    return total


def difference_loss(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """Soft orthogonality of two (B, d) batches: mean over (i, j) of (H1^T H2)_ij^2, rows of
    H1, H2 batch-centred and scaled to unit L2 norm (the norm is not differentiated)."""
    h1 = h1.flatten(1)
    h2 = h2.flatten(1)
    h1 = h1 - h1.mean(0, keepdim=True)
    h2 = h2 - h2.mean(0, keepdim=True)
    h1 = h1 / (h1.norm(p=2, dim=1, keepdim=True).detach() + DIFF_EPS)
    h2 = h2 / (h2.norm(p=2, dim=1, keepdim=True).detach() + DIFF_EPS)
    return (h1.t() @ h2).pow(2).mean()


def reconstruction_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every entry of two equally shaped tensors."""
    return (original - reconstructed).pow(2).mean()
