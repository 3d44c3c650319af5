"""MFM's prior-matching term (Tsai et al., ICLR 2019, as MMSA computes it): the maximum mean
discrepancy between a batch of latent codes and a sample of the standard normal prior.

MMD(z, s) = mean k(s, s) + mean k(z, z) - 2 mean k(s, z), with the kernel
k(x, y) = exp(-mean_d (x_d - y_d)^2 / D) over the D features (MMSA's ``compute_kernel``: the
squared distance is averaged over the features and divided by D once more).
"""

from __future__ import annotations

import torch


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M): exp(-mean_d (x_nd - y_md)^2 / D)."""
    dim = x.size(1)
    return torch.exp(-(x[:, None, :] - y[None, :, :]).pow(2).mean(2) / float(dim))


def mmd_to_sample(z: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """The kernel MMD between codes ``z`` (N, D) and a prior ``sample`` (M, D), a scalar."""
    return (gaussian_kernel(sample, sample).mean() + gaussian_kernel(z, z).mean()
            - 2.0 * gaussian_kernel(sample, z).mean())


def mmd_to_normal(z: torch.Tensor) -> torch.Tensor:
    """:func:`mmd_to_sample` against a fresh standard-normal sample of z's shape (drawn from
    the global generator of z's device, as MMSA draws it once per code and step)."""
    return mmd_to_sample(z, torch.randn(z.shape, device=z.device, dtype=z.dtype))
