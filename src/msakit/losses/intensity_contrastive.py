"""CLGSI's contrastive learning guided by sentiment intensity (Yang et al., NAACL Findings 2024,
Section 3.4).

Two losses, two classes: :class:`IntensityGuidedContrastiveLoss` follows the paper,
:class:`OfficialIntensityContrastiveLoss` the authors' released code; each has its weight
function (``pair_weights``), which ``msakit plot weights`` draws.

:class:`IntensityGuidedContrastiveLoss` (``variant="paper"`` in CLGSI's config) follows the paper
(readings: docs/readings.md, "CLGSI: the contrastive loss"):

1. ŷ = y / H, with H = ``label_scale`` (3 for MOSI/MOSEI, 1 for SIMS), so labels lie in [-1, 1].
2. D_ij = |ŷ_i − ŷ_j|. Samples i and j form an initial positive pair if D_ij ≤ κ
   (``threshold``, 0.4), an initial negative pair otherwise.
3. Weights (eq. 2): w_ij = g·|tanh(D_ij − 2κ)| for positives and g·|tanh(D_ij)| for negatives,
   with g = ``gain`` = 1.5.
4. The pairs of anchor sample i. For j = i, the three cross-modal pairs (V^i, T^i), (V^i, A^i)
   and (T^i, A^i) are all positive, with D = 0 and so w = g·|tanh(−2κ)|. For each j ≠ i, the
   nine pairs (m^i, n^j) with m, n ∈ {T, A, V} are intra-modal (m = n) and inter-modal
   (m ≠ n). They are positive if (i, j) is positive and negative otherwise. No representation is
   paired with itself.
5. δ(a, p) = exp(w · cos(a, p) / τ) and L_i = −log(Σ_{P^i} δ / Σ_{P^i ∪ N^i} δ), where
   τ = ``temperature`` (required: its default lives in the model's config, ``CLGSIConfig``;
   the authors' code uses 0.03, ``--preset authors``). The loss is the mean of L_i over the batch,
   a reading: Eq. 3 as written sums over the batch, B times the mean (γ·B on the mean is γ on
   the sum).

The three representations of every sample are stacked into one (3B, d) matrix, T block first,
then A, then V. The module computes a single cosine-similarity matrix and selects the pairs
with named masks. Each anchor sample gets one log-sum-exp over its positive pairs and one over
its negative pairs: L_i = log(1 + Σ_neg δ / Σ_pos δ) = logaddexp(0, lse_neg − lse_pos). For
B = 1 only the three within-sample pairs exist, all positive, so the loss is exactly 0.
``weighted=False`` is the paper's "w/o Weight" ablation: every w is 1, and pairs are still
chosen by κ.

Reading chosen: labels stored in float32 make the test D ≤ κ depend on rounding at exactly
D = κ. On MOSI/MOSEI such ties are common, since labels there often differ by exactly 1.2.
The paper's rule is "≤", so D is computed in float64 and compared with κ plus a tolerance of
1e-6 (``BOUNDARY_TOLERANCE``). Exact ties are then positive whatever the float rounding.

:class:`OfficialIntensityContrastiveLoss` (``variant="official"``) reproduces
``contrastive_loss`` in the authors' released code
(github.com/AZYoung233/CLGSI, ``models/contrastive_loss.py``). That code produced the paper's
numbers. It differs from the paper in these ways:

* Modality pairs, not sample pairs. For each modality pair (p, q) in (V, A), (V, T), (T, A),
  loss_pq = ½(ℓ(p, q) + ℓ(q, p)), and the total is the **sum** loss_VA + loss_VT + loss_TA.
  Each ℓ(p, q) is a mean over the anchors i of −log(N_i / Den_i), with
  N_i = Σ_j [E⁺(S_pq) + E⁺(S_pp)]_ij and Den_i = N_i + Σ_j [E⁻(S_pq) + E⁻(S_pp)]_ij.
  Here S_pq = Ẑ_p Ẑ_qᵀ, E⁺(S) = exp(W⁺∘S / τ) and E⁻(S) = exp(0.8·W⁻∘S / τ). ℓ(p, q) uses
  only the anchor modality's own intra-modal matrix S_pp, never S_qq.
* Intra-modal pairs (p^i, p^j) come from S_pp. Every modality is therefore contrasted with
  itself once per partner modality, that is twice in total.
* Diagonals are kept. The self-pair (p^i, p^i) in S_pp is a positive with cosine 1 and weight
  g·tanh(2κ) = 0.996. It adds a constant exp(0.996/0.03) ≈ 2.6e14 to every numerator and every
  denominator, so typical loss values are tiny, and this term carries no gradient.
* Masked entries are not removed. A pair outside the positive (negative) set has weight 0 and
  so contributes exp(0) = 1 to the positive (negative) sums. Every j therefore adds two 1's to
  Den_i. For example, B = 1 does not give 0.
* A factor 0.8 scales the negative weights: W⁻ = 0.8·g·tanh(D).
* H = 3 for every dataset but CH-SIMS v2. The labels are mapped as ((y + 3) / 3) − 1, in that
  order, for every dataset name except ``'simsv2'``, whose labels are used as they are (H = 1).
  SIMS labels in [-1, 1] are therefore squeezed into [-1/3, 1/3], and a SIMS pair is negative
  only when |y_i − y_j| > 1.2. The config's ``H`` key is never read. To reproduce the code, use
  ``label_scale=3.0`` (the default) on every dataset but SIMS v2, and ``label_scale=1.0`` there
  (``--preset authors`` sets both). The module maps with ``label_scale`` as ((y + H) / H) − 1,
  and with H = 1 leaves the labels as they are, as the code does for simsv2 (((y + 1) / 1) − 1
  differs from y by a rounding step for some float32 labels, which moves pairs at D = κ).
* D ≤ κ is tested on the mapped labels in the labels' own precision, without tolerance.
  (0, 1.2) is negative in float64, since D = 0.40000000000000013, but positive in float32.
  (−1.2, 0) is negative in float32.
* The weights are computed in the labels' dtype, as in the original, and multiply the
  similarities with ordinary type promotion.

With ``weighted=False`` the official variant uses 0/1 weights, which are the code's
commented-out binary masks. The 0.8 factor and the exp(0) = 1 terms stay.

Both variants run in at least float32 (float16/bfloat16 inputs are upcast) and return a
scalar of the input dtype. Log-sum-exp keeps them stable. The official variant computes
−log(N/Den) as log(1 + Σneg/Σpos), which is more accurate than the original's ratio when
the loss is tiny, and equals it to float64 rounding.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BOUNDARY_TOLERANCE",
    "OFFICIAL_NEGATIVE_SCALE",
    "IntensityGuidedContrastiveLoss",
    "OfficialIntensityContrastiveLoss",
    "intensity_pair_masks",
    "masked_logsumexp",
]

BOUNDARY_TOLERANCE = 1e-6
"""Tolerance on D ≤ κ in the paper variant, so that exact ties count as positive."""

OFFICIAL_NEGATIVE_SCALE = 0.8
"""Factor the authors' code applies to the negative weights (``get_negative_pair``)."""

NUM_MODALITIES = 3  # T, A, V


def masked_logsumexp(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """log Σ exp(logits) over the entries where ``mask`` is True, along ``dim``.

    An empty selection gives −inf in the forward pass and zero gradient, with no NaN.
    """
    empty = ~mask.any(dim=dim, keepdim=True)
    x = logits.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    return x.logsumexp(dim=dim, keepdim=True).masked_fill(empty, float("-inf")).squeeze(dim)


def _check_inputs(features: list[Tensor], labels: Tensor) -> None:
    first = features[0]
    if first.dim() != 2:
        raise ValueError(f"features must be (batch, dim), got shape {tuple(first.shape)}")
    for x in features[1:]:
        if x.shape != first.shape:
            raise ValueError(
                f"all features must have the same shape, got {tuple(first.shape)} "
                f"and {tuple(x.shape)}"
            )
    if labels.shape != (first.shape[0],):
        raise ValueError(
            f"labels must be (batch,) = ({first.shape[0]},), got {tuple(labels.shape)}"
        )


def intensity_pair_masks(
    labels: Tensor, threshold: float = 0.4, label_scale: float = 3.0
) -> dict[str, Tensor]:
    """Pair sets and distances of the paper variant (§3.4.1).

    Args:
        labels: (B,) sentiment labels.
        threshold: κ.
        label_scale: H. ŷ = y / H.

    Returns:
        A dict with these entries:

        * ``"distance"``: (B, B) float64, D_ij = |ŷ_i − ŷ_j|.
        * ``"initial_positive"``: (B, B) bool, D_ij ≤ κ up to ``BOUNDARY_TOLERANCE``.
        * ``"positive"`` and ``"negative"``: (3B, 3B) bool over the stacked representations
          [T; A; V]. Row r is the anchor representation of sample r mod B, and column c is its
          partner. Anchor sample i owns the rows of sample i. Within a sample only the three
          pairs (T, A), (T, V), (A, V) are kept, each once, and they are always positive.
          Across samples all nine modality pairs are kept.
    """
    batch = labels.shape[0]
    y_hat = labels.to(torch.float64) / label_scale
    distance = (y_hat[:, None] - y_hat[None, :]).abs()  # (B, B)
    initial_positive = distance <= threshold + BOUNDARY_TOLERANCE

    idx = torch.arange(NUM_MODALITIES * batch, device=labels.device)
    sample, modality = idx % batch, idx // batch
    same_sample = sample[:, None] == sample[None, :]
    within_sample = same_sample & (modality[:, None] < modality[None, :])  # 3 pairs per sample
    pairs = within_sample | ~same_sample
    close = initial_positive.repeat(NUM_MODALITIES, NUM_MODALITIES)  # (3B, 3B)
    return {
        "distance": distance,
        "initial_positive": initial_positive,
        "positive": pairs & close,
        "negative": pairs & ~close,
    }


class _IntensityLoss(nn.Module):
    """The hyperparameters both CLGSI losses take (each loss computes on its own)."""

    variant: ClassVar[str]
    negative_scale: ClassVar[float] = 1.0
    """Factor on the negative weights (the official loss's 0.8)."""

    def __init__(
        self,
        *,
        threshold: float = 0.4,
        gain: float = 1.5,
        temperature: float,
        label_scale: float = 3.0,
        weighted: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0 or label_scale <= 0 or threshold < 0:
            raise ValueError("temperature and label_scale must be > 0 and threshold >= 0")
        self.threshold = threshold
        self.gain = gain
        self.temperature = temperature
        self.label_scale = label_scale
        self.weighted = weighted

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, gain={self.gain}, temperature={self.temperature}, "
            f"label_scale={self.label_scale}, weighted={self.weighted}"
        )

    def pair_weights(self, distance: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 2 at label distances ``distance`` (any shape): the weight a pair at that
        distance gets as a positive pair and as a negative one (which applies is decided by
        κ); the negative one times :attr:`negative_scale`. ``weighted=False``: all 1."""
        if not self.weighted:
            return torch.ones_like(distance), torch.ones_like(distance)
        positive = self.gain * torch.tanh(distance - 2 * self.threshold).abs()
        return positive, self.negative_scale * self.gain * torch.tanh(distance).abs()

    def forward(self, text: Tensor, audio: Tensor, vision: Tensor, labels: Tensor) -> Tensor:
        """Contrastive loss of one batch.

        Args:
            text, audio, vision: (B, d) common representations T, A, V.
            labels: (B,) sentiment labels on the dataset's own scale.

        Returns:
            A scalar with the dtype of ``text``.
        """
        _check_inputs([text, audio, vision], labels)
        return self.loss(text, audio, vision, labels).to(text.dtype)

    def loss(self, text: Tensor, audio: Tensor, vision: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError


class IntensityGuidedContrastiveLoss(_IntensityLoss):
    """CLGSI's contrastive loss L_cl as the paper defines it (Sec. 3.4; the module docstring).

    Args:
        threshold: κ, the sentiment-intensity difference that separates positive pairs from
            negative ones (0.4).
        gain: g, the gain of the tanh weight function (1.5).
        temperature: τ, required (CLGSI passes its config's value: the default is
            ``CLGSIConfig.temperature``, the authors' 0.03 is ``--preset authors``').
        label_scale: H, which maps labels to [-1, 1] (3 for MOSI/MOSEI, 1 for SIMS).
        weighted: False gives the "w/o Weight" ablation, with all weights equal to 1.
    """

    variant = "paper"

    def loss(self, text: Tensor, audio: Tensor, vision: Tensor, labels: Tensor) -> Tensor:
        batch = labels.shape[0]
        dtype = torch.promote_types(text.dtype, torch.float32)
        z = F.normalize(torch.cat([text, audio, vision]).to(dtype), dim=-1)  # (3B, d)
        cosine = z @ z.T  # (3B, 3B)

        masks = intensity_pair_masks(labels, self.threshold, self.label_scale)
        positive, negative = self.pair_weights(masks["distance"])
        weight = torch.where(masks["initial_positive"], positive, negative)
        weight = weight.to(dtype).repeat(NUM_MODALITIES, NUM_MODALITIES)  # (3B, 3B)
        logits = weight * cosine / self.temperature  # log δ

        def by_anchor_sample(x: Tensor) -> Tensor:  # (3B, 3B) -> (B, 3 * 3B)
            return x.reshape(NUM_MODALITIES, batch, -1).transpose(0, 1).reshape(batch, -1)

        lse_pos = masked_logsumexp(by_anchor_sample(logits), by_anchor_sample(masks["positive"]))
        lse_neg = masked_logsumexp(by_anchor_sample(logits), by_anchor_sample(masks["negative"]))
        per_sample = torch.logaddexp(torch.zeros_like(lse_pos), lse_neg - lse_pos)  # L_i
        return per_sample.mean()


class OfficialIntensityContrastiveLoss(_IntensityLoss):
    """``contrastive_loss`` of the authors' released code (the module docstring lists every
    difference from the paper). Arguments as :class:`IntensityGuidedContrastiveLoss`; H = 3
    reproduces the code on every data set but CH-SIMS v2 (H = 1 there)."""

    variant = "official"
    negative_scale = OFFICIAL_NEGATIVE_SCALE

    def loss(self, text: Tensor, audio: Tensor, vision: Tensor, labels: Tensor) -> Tensor:
        batch = labels.shape[0]
        y = labels if labels.is_floating_point() else labels.to(torch.get_default_dtype())
        scale = self.label_scale
        # The authors' label_map_reconstruction: (y + 3) / 3 - 1 in that order, and simsv2's
        # labels as they are. H = 1 is therefore the identity, not (y + 1) / 1 - 1, which
        # moves labels by a rounding step and can move a pair across κ.
        y_mapped = y if scale == 1 else (y + scale) / scale - 1
        distance = (y_mapped[:, None] - y_mapped[None, :]).abs()  # (B, B), labels' dtype
        close = distance <= self.threshold
        zero = torch.zeros_like(distance)
        if self.weighted:
            w_pos = torch.where(close, -torch.tanh(distance - 2 * self.threshold) * self.gain, zero)
            w_neg = torch.where(close, zero, torch.tanh(distance) * self.gain)
        else:
            w_pos, w_neg = close.to(distance.dtype), (~close).to(distance.dtype)

        dtype = torch.promote_types(torch.promote_types(text.dtype, torch.float32), y.dtype)
        w_pos, w_neg = w_pos.to(dtype), w_neg.to(dtype)
        z = torch.cat([F.normalize(x.to(dtype), dim=1) for x in (text, audio, vision)])
        sim = (z @ z.T).reshape(NUM_MODALITIES, batch, NUM_MODALITIES, batch).transpose(1, 2)
        # sim[p, q] = S_pq, (B, B). All six ordered modality pairs (p, q), p != q.
        p_idx = torch.tensor([0, 0, 1, 1, 2, 2], device=sim.device)
        q_idx = torch.tensor([1, 2, 0, 2, 0, 1], device=sim.device)
        s_pq, s_pp = sim[p_idx, q_idx], sim[p_idx, p_idx]  # (6, B, B) each

        # Every j of every matrix enters the sums: weight-0 entries contribute exp(0) = 1.
        pos = torch.cat([s_pq * w_pos, s_pp * w_pos], dim=-1) / self.temperature  # (6, B, 2B)
        neg = torch.cat([s_pq * w_neg, s_pp * w_neg], dim=-1)
        neg = neg * OFFICIAL_NEGATIVE_SCALE / self.temperature
        lse_pos, lse_neg = pos.logsumexp(dim=-1), neg.logsumexp(dim=-1)  # (6, B)
        ell = torch.logaddexp(torch.zeros_like(lse_pos), lse_neg - lse_pos).mean(dim=-1)
        # loss_VA + loss_VT + loss_TA with loss_pq = (ℓ(p, q) + ℓ(q, p)) / 2.
        return ell.sum() / 2
