"""Which code path a device takes: small pure decisions, testable without the device.

msakit's speed work was done on CPUs; on a CUDA GPU the stock PyTorch paths are the fast ones.
Every place that chooses between the two asks a function here with the device type
(``"cpu"``, ``"cuda"``, ...), so the choices can be checked on a machine without a GPU:

- :func:`cpu_speed_settings`: the allocator setting (``reuse_memory``,
  :mod:`msakit.training.allocator`) and NumPy-drawn dropout masks (``fast_dropout``,
  :mod:`msakit.encoders.dropout`) apply on CPUs only;
- :func:`attention_kernel`: the fused ``scaled_dot_product_attention`` (which takes dropout on
  CUDA), or the attention written out (CPUs with dropout, whose fused kernels take none);
- :func:`packed_feed_forward`: msakit's one-function feed-forward block (float32 on CPUs), or
  the stock composition of PyTorch ops;
- :func:`autocast_settings`: mixed precision (``--set amp=bf16|fp16|off``): bf16 autocast on
  any device, fp16 autocast with a gradient scaler on CUDA only;
- :func:`determinism_flags` / :func:`apply_determinism`: ``--set deterministic=true``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from msakit.config import AMP_MODES, amp_mode  # noqa: F401 - the run's mode, checked there
from msakit.core.errors import MsakitError
from msakit.encoders.dispatch import attention_kernel, packed_feed_forward  # noqa: F401


def cpu_speed_settings(device_type: str, reuse_memory: bool, fast_dropout: bool) -> dict[str, bool]:
    """Which of the CPU speed settings the Trainer applies on ``device_type``: none off CPUs."""
    on_cpu = device_type == "cpu"
    return {"reuse_memory": on_cpu and reuse_memory, "fast_dropout": on_cpu and fast_dropout}


@dataclass(frozen=True)
class Autocast:
    enabled: bool
    dtype: torch.dtype
    scaler: bool
    """Whether the loss is scaled (fp16 gradients underflow without it)."""


def autocast_settings(device_type: str, mode: str) -> Autocast:
    """Autocast and loss scaling for a mixed-precision mode on a device type.

    ``bf16`` is autocast to bfloat16 (CPUs and GPUs; its range is float32's, so no scaling);
    ``fp16`` is autocast to float16 with a gradient scaler, on CUDA only (CPUs have no fast
    float16 matmuls: use bf16 there)."""
    if mode == "off":
        return Autocast(False, torch.bfloat16, False)
    if mode == "bf16":
        return Autocast(True, torch.bfloat16, False)
    if mode == "fp16":
        if device_type != "cuda":
            raise MsakitError(
                f"amp=fp16 needs a CUDA GPU (this run is on {device_type}); use amp=bf16"
            )
        return Autocast(True, torch.float16, True)
    raise MsakitError(f"amp must be {', '.join(AMP_MODES)}, got {mode!r}")


def determinism_flags(deterministic: bool) -> dict[str, bool]:
    """What ``deterministic`` sets: PyTorch's deterministic algorithms (warning, not failing,
    on an op that has none) and cuDNN's deterministic kernels without autotuning."""
    return {
        "use_deterministic_algorithms": deterministic,
        "cudnn_deterministic": deterministic,
        "cudnn_benchmark": False if deterministic else torch.backends.cudnn.benchmark,
    }


def apply_determinism(deterministic: bool, device_type: str) -> None:
    """With ``deterministic``, set :func:`determinism_flags` process-wide (PyTorch keeps them
    per process); without, leave the process's flags as they are (a caller's own choice). On
    CUDA, deterministic cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG``, set here unless given."""
    if not deterministic:
        return
    flags = determinism_flags(deterministic)
    if deterministic and device_type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(flags["use_deterministic_algorithms"], warn_only=True)
    torch.backends.cudnn.deterministic = flags["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
