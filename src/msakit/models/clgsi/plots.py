"""CLGSI's weight function (Figure 3), drawn from the loss's own weights.

Positive pairs (D ≤ κ) weigh g·|tanh(D − 2κ)|, negative pairs (D > κ) g·|tanh(D)| (the official
loss: 0.8·g·|tanh(D)|), over D ∈ [0, 2] (D is the difference of the labels scaled to [-1, 1]).
The curves come from :meth:`~msakit.losses.IntensityGuidedContrastiveLoss.pair_weights` of the
loss a configuration builds (:func:`msakit.models.clgsi.model.contrastive_loss`), so the figure
shows what training computes. ``msakit plot weights`` draws it
(:func:`msakit.reporting.plots.plot_model_figure`, through CLGSI's ``ModelSpec.plots``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from msakit.core.errors import MsakitError
from msakit.models.clgsi.config import CLGSIConfig
from msakit.models.clgsi.model import contrastive_loss
from msakit.models.registry import ModelPlot

WEIGHT_RANGE = (0.0, 2.0)
"""The figure's D axis."""


def weight_curves(
    threshold: float, gain: float, points: int = 401, config: CLGSIConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """D over [0, 2] and the positive and negative weights (Eq. 2) over all of it, as the loss
    of ``config`` (default: the paper's) with this κ and g computes them."""
    config = dataclasses.replace(config or CLGSIConfig(), threshold=threshold, gain=gain)
    d = torch.linspace(*WEIGHT_RANGE, points, dtype=torch.float64)
    positive, negative = contrastive_loss(config).pair_weights(d)
    return d.numpy(), positive.numpy(), negative.numpy()


def _check_weight_settings(threshold: float, gain: float) -> None:
    """κ in [0, 2] (the figure's D axis), g finite and >= 0 (as CLGSI's hyperparameter)."""
    if not 0 <= threshold <= WEIGHT_RANGE[1]:
        raise MsakitError(f"--threshold must lie in [0, 2], got {threshold}")
    if not (math.isfinite(gain) and gain >= 0):
        raise MsakitError(f"--gain must be a finite number >= 0, got {gain}")


def _note(config: CLGSIConfig | None, negative_scale: float) -> str:
    if config is not None and not config.weighted:
        return "\n(this run trained with weighted=false: every pair weighed 1)"
    if negative_scale != 1:
        return f"\n(official variant: negative weights × {negative_scale:g})"
    return ""


def draw_weights(
    ax: Any, config: CLGSIConfig | None, *, threshold: float | None = None,
    gain: float | None = None,
) -> str:
    """Figure 3 on ``ax`` for κ and g (given values win over ``config``'s, a checkpoint's; the
    paper's 0.4 and 1.5 otherwise); returns the title."""
    defaults = config or CLGSIConfig()
    threshold = defaults.threshold if threshold is None else float(threshold)
    gain = defaults.gain if gain is None else float(gain)
    _check_weight_settings(threshold, gain)
    # The curves of weighted pairs, even for a run that trained unweighted (the note says so).
    shown = dataclasses.replace(defaults, weighted=True)
    d, positive, negative = weight_curves(threshold, gain, config=shown)
    scale = contrastive_loss(shown).negative_scale
    close = d <= threshold
    ax.plot(d[close], positive[close], color="tab:blue", lw=2,
            label=r"positive pairs: $g\,|\tanh(D - 2\kappa)|$")
    ax.plot(d[~close], negative[~close], color="tab:orange", lw=2,
            label=r"negative pairs: $g\,|\tanh(D)|$" if scale == 1 else
            rf"negative pairs: ${scale:g}\,g\,|\tanh(D)|$")
    ax.plot(d[~close], positive[~close], color="tab:blue", lw=1, ls=":", alpha=0.6)
    ax.plot(d[close], negative[close], color="tab:orange", lw=1, ls=":", alpha=0.6)
    ax.axvline(threshold, color="0.4", ls="--", lw=1)
    ax.annotate(f"κ = {threshold:g}", (threshold, 0.04 * gain), xytext=(6, 0),
                textcoords="offset points", color="0.25")
    ax.set(xlim=WEIGHT_RANGE, ylim=(0, (gain or 1.0) * 1.05),
           xlabel="D (sentiment intensity difference)", ylabel="weight w")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return f"CLGSI weight function, κ = {threshold:g}, g = {gain:g}{_note(config, scale)}"


WEIGHTS_PLOT = ModelPlot(
    help="CLGSI's weight function (Figure 3)",
    draw=draw_weights,
    options=(("--threshold", "κ (default: checkpoint's, or 0.4)"),
             ("--gain", "g (default: checkpoint's, or 1.5)")),
    checkpoint_help="take κ and g from this CLGSI checkpoint",
)
"""``msakit plot weights``."""
