"""ConKI's hierarchical contrastive loss (Yu et al., ACL Findings 2023, Section 3.4 and
Appendix A.1).

Every sample i has 2M representations: the pan-knowledge O_m^i and the knowledge-specific
A_m^i of each modality m. The paper uses M = 3, in the order t, v, a. Fewer modalities serve
the modality-subset ablations. The module stacks them into one (2MB, d) matrix: the pan
blocks O_1, ..., O_M first, then the specific blocks A_1, ..., A_M, each block holding B rows.
Then f(p, q) = exp(cos(p, q) / τ) with τ = ``temperature`` = 0.07.

Pairs (p, q) are ordered, and the anchor p belongs to sample i. Every representation p of
sample i is paired with every representation q of the batch except p itself. Each pair falls
in exactly one named set:

* **P1**: same sample, same knowledge, different modality (intra-sample positives).
* **P2**: different sample with the same rounded label r(y^i) = r(y^j), same knowledge, any
  modalities (inter-sample positives).
* **N1**: different knowledge, any sample, the same sample included (inter-knowledge
  negatives). Both directions count, (O^i, A^j) and (A^i, O^j).
* **N2**: the rest. Different sample, different rounded label, same knowledge.

The loss is

    L_con = Σ_i −1/|P^i| Σ_{(p,q) ∈ P^i} log( f(p, q) / Σ_{All pairs of i} f ),

with P^i = P1^i ∪ P2^i.

Readings chosen here:

* **Denominator.** By default (``denominator="sample"``), "All pairs of i" means all pairs
  (p, q) whose anchor p is any representation of sample i. That gives one denominator per
  sample, shared by all of its positive pairs, as the equation is written. ``"anchor"`` is the
  SupCon-style alternative, with one denominator per anchor p: the pairs (p, ·).
* **Ordered pairs.** P1^i = {(O_m^i, O_n^i) | m ≠ n} is taken literally, with both orders, as
  the set notation reads. So for M = 3, |P1^i| = 12. Appendix A.1 lists the within-sample
  pairs of Figure 4 unordered, three per knowledge. Since f is symmetric, that reading only changes
  the relative weight of P1 inside 1/|P^i| and the denominator.
* **Rounding.** r(·) is ``torch.round``, which rounds half to even like Python's ``round``
  and ``numpy.round``. It is also the rounding of MMSA's Acc-7 (``np.round`` after clipping to
  [−3, 3]), so the seven sentiment intervals coincide with Acc-7's classes, as the paper says
  in Section 4. So 0.5 and −0.5 round to 0, 1.5 and 2.5 to 2, and −2.5 to −2.
  Half-away-from-zero rounding (C's ``round``, ``decimal.ROUND_HALF_UP``) would map 0.5 to 1
  and 2.5 to 3. Labels at exact halves occur in MOSI/MOSEI (averages over an even number of
  annotators), so the choice matters.
* **Reduction.** The loss is a sum over the samples, not a mean, as the paper writes. The
  weight λ (0.01 for MOSI/SIMS, 0.001 for MOSEI) is tuned for that scale. The loss grows with
  the batch size.
* **Empty positive sets.** A sample with |P^i| = 0 contributes 0. This happens only for
  M = 1 when no other sample shares its rounded label.
* ``use_n1=False`` is the "w/o N1" ablation (Table 5). N1 pairs leave the denominator, so the
  model is trained without inter-knowledge negatives.

Inputs of float16 or bfloat16 are computed in float32. The result has the input dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msakit.losses.intensity_contrastive import masked_logsumexp

__all__ = ["HierarchicalContrastiveLoss", "hierarchical_pair_masks"]

NUM_KNOWLEDGE = 2  # pan-knowledge O, knowledge-specific A


def hierarchical_pair_masks(labels: Tensor, num_modalities: int) -> dict[str, Tensor]:
    """Named pair sets over the stacked representations.

    Row and column r stand for knowledge r // (M·B) (0 = pan-knowledge O, 1 =
    knowledge-specific A), modality (r // B) % M, and sample r % B. Entry [p, q] is the ordered
    pair with anchor p.

    Args:
        labels: (B,) sentiment labels. Rounded with ``torch.round``, half to even.
        num_modalities: M.

    Returns:
        ``{"P1", "P2", "N1", "N2"}``, each a (2MB, 2MB) bool mask. Together they partition all
        pairs except the diagonal, which is p paired with itself.
    """
    batch = labels.shape[0]
    n = NUM_KNOWLEDGE * num_modalities * batch
    idx = torch.arange(n, device=labels.device)
    sample = idx % batch
    knowledge = idx // (num_modalities * batch)
    interval = (torch.round(labels) if labels.is_floating_point() else labels)[sample]  # r(y)

    same_sample = sample[:, None] == sample[None, :]
    same_knowledge = knowledge[:, None] == knowledge[None, :]
    same_interval = interval[:, None] == interval[None, :]
    not_self = ~torch.eye(n, dtype=torch.bool, device=labels.device)
    return {
        "P1": same_sample & same_knowledge & not_self,
        "P2": ~same_sample & same_knowledge & same_interval,
        "N1": ~same_knowledge,
        "N2": ~same_sample & same_knowledge & ~same_interval,
    }


class HierarchicalContrastiveLoss(nn.Module):
    """ConKI hierarchical contrastive loss L_con. See the module docstring for the readings.

    Args:
        temperature: τ (0.07).
        use_n1: False gives the "w/o N1" ablation, which drops N1 from the denominator.
        denominator: ``"sample"`` (default) or ``"anchor"``. ``"sample"`` uses one denominator
            per sample i, over all pairs anchored in i, as in the paper's equation.
            ``"anchor"`` uses one per anchor representation, SupCon style.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        use_n1: bool = True,
        denominator: Literal["sample", "anchor"] = "sample",
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if denominator not in ("sample", "anchor"):
            raise ValueError(f"denominator must be 'sample' or 'anchor', got {denominator!r}")
        self.temperature = temperature
        self.use_n1 = use_n1
        self.denominator = denominator

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, use_n1={self.use_n1}, "
            f"denominator={self.denominator!r}"
        )

    def forward(self, pan: list[Tensor], specific: list[Tensor], labels: Tensor) -> Tensor:
        """Hierarchical contrastive loss of one batch.

        Args:
            pan: M ≥ 1 pan-knowledge representations [O_t, O_v, O_a], each (B, d).
            specific: the matching knowledge-specific representations [A_t, A_v, A_a], each
                (B, d), in the same modality order.
            labels: (B,) sentiment labels.

        Returns:
            A scalar with the dtype of ``pan[0]``, summed over the samples.
        """
        num_modalities = len(pan)
        if num_modalities == 0 or len(specific) != num_modalities:
            raise ValueError(
                "pan and specific must be non-empty lists of the same length, "
                f"got {len(pan)} and {len(specific)}"
            )
        shape = pan[0].shape
        if len(shape) != 2 or any(x.shape != shape for x in (*pan, *specific)):
            raise ValueError("all representations must share one (batch, dim) shape")
        batch = shape[0]
        if labels.shape != (batch,):
            raise ValueError(f"labels must be ({batch},), got {tuple(labels.shape)}")

        out_dtype = pan[0].dtype
        dtype = torch.promote_types(out_dtype, torch.float32)
        z = F.normalize(torch.cat([*pan, *specific]).to(dtype), dim=-1)  # (2MB, d)
        logits = z @ z.T / self.temperature  # log f, (2MB, 2MB)

        masks = hierarchical_pair_masks(labels, num_modalities)
        positive = masks["P1"] | masks["P2"]
        in_denominator = positive | masks["N2"]
        if self.use_n1:
            in_denominator = in_denominator | masks["N1"]

        reps = NUM_KNOWLEDGE * num_modalities

        def by_anchor_sample(x: Tensor) -> Tensor:  # (2MB, ...) -> (B, 2M, ...)
            return x.reshape(reps, batch, *x.shape[1:]).transpose(0, 1)

        num_pos = by_anchor_sample(positive).sum(dim=(1, 2))  # |P^i|, (B,)
        pos_logits = torch.where(positive, logits, torch.zeros_like(logits))
        if self.denominator == "sample":
            lse = masked_logsumexp(
                by_anchor_sample(logits).reshape(batch, -1),
                by_anchor_sample(in_denominator).reshape(batch, -1),
            )  # log Σ_{All pairs of i} f, (B,)
            lse = torch.where(num_pos > 0, lse, torch.zeros_like(lse))
            log_ratio_sum = by_anchor_sample(pos_logits).sum(dim=(1, 2)) - num_pos * lse
        else:
            lse = masked_logsumexp(logits, in_denominator)  # one per anchor p, (2MB,)
            row_pos = positive.sum(dim=1)
            lse = torch.where(row_pos > 0, lse, torch.zeros_like(lse))
            per_row = pos_logits.sum(dim=1) - row_pos * lse
            log_ratio_sum = by_anchor_sample(per_row).sum(dim=1)
        per_sample = -log_ratio_sum / num_pos.clamp(min=1)  # 0 when |P^i| = 0
        return per_sample.sum().to(out_dtype)
