"""Which kernel an encoder runs on a device: decisions only, no state (the training layer's
device module, :mod:`msakit.training.device`, documents them with the run's other device
settings and re-exports them).

- :func:`attention_kernel`: the fused ``scaled_dot_product_attention`` (which takes dropout on
  GPUs) or the math written out (CPUs with dropout).
- :func:`packed_feed_forward`: msakit's one-function feed-forward block (float32 on CPUs), or
  the stock PyTorch ops (GPUs, autocast).
"""

from __future__ import annotations

import torch


def attention_kernel(device_type: str, dropout: float, unfused: bool = False) -> str:
    """``"fused"`` (``scaled_dot_product_attention``, dropout inside) or ``"written"`` (the
    math written out, needed on CPUs when there is dropout, or when asked with ``unfused``)."""
    if unfused:
        return "written"
    return "fused" if dropout == 0.0 or device_type != "cpu" else "written"


def packed_feed_forward(device_type: str, dtype: torch.dtype, cpu_autocast: bool) -> bool:
    """Whether the feed-forward block is msakit's one-function version (float32 on CPUs
    outside autocast); otherwise the stock PyTorch ops."""
    return device_type == "cpu" and dtype == torch.float32 and not cpu_autocast
