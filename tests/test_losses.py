"""Tests of the two contrastive losses: hand-computed values, independent loop references,
the pair sets of ConKI's Figure 4, dtypes, gradients and invariances."""

from __future__ import annotations

import math
import random

import pytest
import torch

from msakit.losses import (
    HierarchicalContrastiveLoss,
    IntensityGuidedContrastiveLoss,
    OfficialIntensityContrastiveLoss,
    hierarchical_pair_masks,
    intensity_pair_masks,
)

G = 1.5  # CLGSI gain g
KAPPA = 0.4  # CLGSI threshold κ
CLGSI_LOSSES = {"paper": IntensityGuidedContrastiveLoss,
                "official": OfficialIntensityContrastiveLoss}


def t64(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _cos(u: list[float], v: list[float]) -> float:
    nu = math.sqrt(sum(a * a for a in u))
    nv = math.sqrt(sum(b * b for b in v))
    return sum(a * b for a, b in zip(u, v, strict=True)) / (max(nu, 1e-12) * max(nv, 1e-12))


def _random_features(batch: int, dim: int, count: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=gen, dtype=torch.float64) for _ in range(count)]


def _grid_labels(batch: int, seed: int, step: float, with_ties: bool = True) -> torch.Tensor:
    """Labels on a grid in [-3, 3], with exact zeros and repeated values."""
    rng = random.Random(seed)
    grid = [round(k * step, 10) for k in range(int(-3 / step), int(3 / step) + 1)]
    labels = [rng.choice(grid) for _ in range(batch)]
    if with_ties and batch >= 3:
        labels[0] = 0.0
        labels[1] = labels[2]
    return t64(labels)


# --------------------------------------------------------------------------------------------
# CLGSI: independent references written from the paper and from the authors' math
# --------------------------------------------------------------------------------------------


def clgsi_paper_reference(t, a, v, y, tau=0.03, H=3.0, weighted=True) -> float:
    """Section 3.4's steps (the module docstring's list), loop by loop, in plain Python floats."""
    feats = {"T": t.tolist(), "A": a.tolist(), "V": v.tolist()}
    ys = y.tolist()
    batch = len(ys)
    losses = []
    for i in range(batch):
        pos, neg = [], []
        w0 = G * abs(math.tanh(0.0 - 2 * KAPPA)) if weighted else 1.0
        for m, n in (("V", "T"), ("V", "A"), ("T", "A")):
            pos.append(math.exp(w0 * _cos(feats[m][i], feats[n][i]) / tau))
        for j in range(batch):
            if j == i:
                continue
            d = abs(ys[i] / H - ys[j] / H)
            is_pos = d <= KAPPA + 1e-6
            if weighted:
                w = G * abs(math.tanh(d - 2 * KAPPA)) if is_pos else G * abs(math.tanh(d))
            else:
                w = 1.0
            for m in "TAV":
                for n in "TAV":
                    delta = math.exp(w * _cos(feats[m][i], feats[n][j]) / tau)
                    (pos if is_pos else neg).append(delta)
        losses.append(-math.log(sum(pos) / (sum(pos) + sum(neg))))
    return sum(losses) / batch


def clgsi_official_reference(t, a, v, y, tau=0.03, weighted=True) -> float:
    """The math of the authors' ``contrastive_loss``, written out as loops.

    Labels are mapped as ((y + 3) / 3) - 1. W+ = -g·tanh(D - 2κ) where D ≤ κ, else 0. W- =
    g·tanh(D) where D > κ, else 0. The negatives carry an extra factor 0.8. Every j, the
    diagonal included, enters every sum, and a zero weight gives exp(0) = 1.
    """
    feats = {"T": t.tolist(), "A": a.tolist(), "V": v.tolist()}
    ys = [(val + 3) / 3 - 1 for val in y.tolist()]
    batch = len(ys)

    def weights(i: int, j: int) -> tuple[float, float]:
        d = abs(ys[i] - ys[j])
        if d <= KAPPA:
            return (-math.tanh(d - 2 * KAPPA) * G if weighted else 1.0), 0.0
        return 0.0, (math.tanh(d) * G if weighted else 1.0)

    def ell(p: str, q: str) -> float:
        total = 0.0
        for i in range(batch):
            num = den = 0.0
            for j in range(batch):
                w_pos, w_neg = weights(i, j)
                s_pq = _cos(feats[p][i], feats[q][j])
                s_pp = _cos(feats[p][i], feats[p][j])
                e_pos = math.exp(s_pq * w_pos / tau) + math.exp(s_pp * w_pos / tau)
                e_neg = math.exp(s_pq * w_neg * 0.8 / tau) + math.exp(s_pp * w_neg * 0.8 / tau)
                num += e_pos
                den += e_pos + e_neg
            total += -math.log(num / den)
        return total / batch

    return sum((ell(p, q) + ell(q, p)) / 2 for p, q in (("V", "A"), ("V", "T"), ("T", "A")))


# --------------------------------------------------------------------------------------------
# CLGSI, paper variant
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.5, 0.03])
def test_clgsi_paper_hand_computed_two_samples(tau: float) -> None:
    # Labels 0 and 3 map to ŷ = 0 and 1, so D = 1 > κ: every cross-sample pair is negative.
    # The vectors are not unit length; only their directions matter.
    t = t64([[2.0, 0.0], [-1.0, 0.0]])
    a = t64([[0.0, 3.0], [0.0, 1.0]])
    v = t64([[1.0, 0.0], [0.0, -5.0]])
    y = t64([0.0, 3.0])
    w0 = 1.5 * math.tanh(0.8)  # |tanh(0 − 2κ)|·g, the within-sample weight
    wn = 1.5 * math.tanh(1.0)  # |tanh(D)|·g, D = 1
    # Sample 1: within cosines (V,T)=1, (V,A)=0, (T,A)=0.
    pos1 = math.exp(w0 * 1 / tau) + 2 * math.exp(0.0)
    # The nine cross cosines (m^1, n^2): TT=-1 TA=0 TV=0 AT=0 AA=1 AV=-1 VT=-1 VA=0 VV=0.
    neg = 3 * math.exp(-wn / tau) + 1 * math.exp(wn / tau) + 5 * math.exp(0.0)
    # Sample 2: within cosines (V,T)=0, (V,A)=-1, (T,A)=0; the same nine cross cosines.
    pos2 = 2 * math.exp(0.0) + math.exp(-w0 / tau)
    expected = 0.5 * (-math.log(pos1 / (pos1 + neg)) - math.log(pos2 / (pos2 + neg)))

    loss = IntensityGuidedContrastiveLoss(temperature=tau)(t, a, v, y)
    assert loss.item() == pytest.approx(expected, rel=1e-12)

    # "w/o Weight": every w = 1, the pairs unchanged.
    pos1_u = math.exp(1 / tau) + 2
    neg_u = 3 * math.exp(-1 / tau) + math.exp(1 / tau) + 5
    pos2_u = 2 + math.exp(-1 / tau)
    expected_u = 0.5 * (-math.log(pos1_u / (pos1_u + neg_u)) - math.log(pos2_u / (pos2_u + neg_u)))
    loss_u = IntensityGuidedContrastiveLoss(temperature=tau, weighted=False)(t, a, v, y)
    assert loss_u.item() == pytest.approx(expected_u, rel=1e-12)


def test_clgsi_paper_hand_computed_mixed_pairs() -> None:
    # d = 1: every cosine is ±1, the product of the signs. Labels 0, 0.6, 3 give ŷ = 0, 0.2, 1:
    # (1,2) positive with D = 0.2; (1,3) negative with D = 1; (2,3) negative with D = 0.8.
    tau = 0.5
    t, a, v = t64([[1.0], [1.0], [-1.0]]), t64([[1.0], [-1.0], [-1.0]]), t64([[1.0], [1.0], [1.0]])
    y = t64([0.0, 0.6, 3.0])
    w0 = 1.5 * math.tanh(0.8)
    w12 = 1.5 * math.tanh(abs(0.2 - 0.8))
    w13 = 1.5 * math.tanh(1.0)
    w23 = 1.5 * math.tanh(0.8)

    def e(w: float, s: int) -> float:
        return math.exp(w * s / tau)

    # Signs (T, A, V): sample 1 (+,+,+), sample 2 (+,-,+), sample 3 (-,-,+).
    # Sample 1: within TA=+ TV=+ AV=+; with 2: six +1, three -1 (positive);
    # with 3: three +1, six -1 (negative).
    pos1 = 3 * e(w0, 1) + 6 * e(w12, 1) + 3 * e(w12, -1)
    neg1 = 3 * e(w13, 1) + 6 * e(w13, -1)
    # Sample 2: within TA=- TV=+ AV=-; with 1: six +1, three -1; with 3: four +1, five -1.
    pos2 = e(w0, 1) + 2 * e(w0, -1) + 6 * e(w12, 1) + 3 * e(w12, -1)
    neg2 = 4 * e(w23, 1) + 5 * e(w23, -1)
    # Sample 3: within TA=+ TV=- AV=-; with 1: three +1, six -1; with 2: four +1, five -1.
    pos3 = e(w0, 1) + 2 * e(w0, -1)
    neg3 = 3 * e(w13, 1) + 6 * e(w13, -1) + 4 * e(w23, 1) + 5 * e(w23, -1)
    expected = sum(-math.log(p / (p + n)) for p, n in ((pos1, neg1), (pos2, neg2), (pos3, neg3)))
    expected /= 3

    loss = IntensityGuidedContrastiveLoss(temperature=tau)(t, a, v, y)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_clgsi_paper_single_sample_is_zero_with_zero_gradient() -> None:
    t, a, v = (x.requires_grad_() for x in _random_features(1, 4, 3, seed=0))
    loss = IntensityGuidedContrastiveLoss(temperature=0.03)(t, a, v, t64([1.4]))
    assert loss.item() == 0.0
    loss.backward()
    for x in (t, a, v):
        assert torch.isfinite(x.grad).all()
        assert torch.count_nonzero(x.grad) == 0


def test_clgsi_paper_masks_count_pairs() -> None:
    masks = intensity_pair_masks(t64([0.0, 0.6, 3.0, 3.0]), threshold=KAPPA, label_scale=3.0)
    pos, neg = masks["positive"], masks["negative"]
    assert not (pos & neg).any()
    assert not pos.diagonal().any() and not neg.diagonal().any()
    # Per anchor sample: 3 within-sample pairs + 9 per other sample.
    rows = (pos | neg).reshape(3, 4, -1).transpose(0, 1).reshape(4, -1).sum(1)
    assert rows.tolist() == [3 + 9 * 3] * 4
    # Sample 1: within (3) + sample 2 (9) positive; samples 3, 4 negative.
    assert pos.reshape(3, 4, -1)[:, 0].sum() == 12
    assert neg.reshape(3, 4, -1)[:, 0].sum() == 18


def test_clgsi_paper_boundary_counts_as_positive() -> None:
    # |Δy| = 1.2 gives D = κ exactly, which the paper counts as positive. With two samples
    # and only positive pairs, the loss is exactly 0, even for float32 labels.
    feats = _random_features(2, 3, 3, seed=1)
    loss_fn = IntensityGuidedContrastiveLoss(temperature=0.03)
    for pair in ([0.0, 1.2], [-1.2, 0.0], [-1.0, 0.2], [1.4, 0.2]):
        for dtype in (torch.float32, torch.float64):
            assert loss_fn(*feats, torch.tensor(pair, dtype=dtype)).item() == 0.0
    assert loss_fn(*feats, t64([0.0, 1.25])).item() > 0.0


@pytest.mark.parametrize("batch", [1, 2, 3, 6])
@pytest.mark.parametrize("weighted", [True, False])
def test_clgsi_paper_matches_loop_reference(batch: int, weighted: bool) -> None:
    t, a, v = _random_features(batch, 5, 3, seed=batch)
    y = _grid_labels(batch, seed=batch, step=0.25)
    for tau in (0.03, 0.3):
        loss_fn = IntensityGuidedContrastiveLoss(temperature=tau, weighted=weighted)
        expected = clgsi_paper_reference(t, a, v, y, tau=tau, weighted=weighted)
        assert loss_fn(t, a, v, y).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_clgsi_paper_label_scale() -> None:
    # SIMS: H = 1. Labels 0 and 0.3 are 0.3 apart: positive with H = 1, and with H = 3 too.
    # Labels 0 and 0.6 are negative only with H = 1.
    t, a, v = _random_features(3, 4, 3, seed=3)
    y = t64([0.0, 0.6, -0.2])
    for H in (1.0, 3.0):
        loss = IntensityGuidedContrastiveLoss(label_scale=H, temperature=0.03)(t, a, v, y)
        assert loss.item() == pytest.approx(clgsi_paper_reference(t, a, v, y, H=H), rel=1e-10)


def test_clgsi_pair_weights_are_eq_2_by_hand() -> None:
    """The weight function the loss uses (and ``msakit plot weights`` draws): g|tanh(D - 2κ)|
    for positive pairs, g|tanh(D)| for negative ones; the official loss scales the negative
    weight by 0.8; unweighted, every weight is 1."""
    d = t64([0.0, 0.4, 1.0])
    positive, negative = IntensityGuidedContrastiveLoss(gain=2.0, temperature=0.03).pair_weights(d)
    assert positive.tolist() == pytest.approx([2 * math.tanh(0.8), 2 * math.tanh(0.4),
                                               2 * math.tanh(0.2)], rel=1e-12)
    assert negative.tolist() == pytest.approx([0.0, 2 * math.tanh(0.4), 2 * math.tanh(1.0)],
                                              rel=1e-12)
    _, official = OfficialIntensityContrastiveLoss(gain=2.0, temperature=0.03).pair_weights(d)
    assert official.tolist() == pytest.approx([0.0, 1.6 * math.tanh(0.4), 1.6 * math.tanh(1.0)],
                                              rel=1e-12)
    flat = IntensityGuidedContrastiveLoss(weighted=False, temperature=0.03).pair_weights(d)
    assert [w.tolist() for w in flat] == [[1.0] * 3, [1.0] * 3]


# --------------------------------------------------------------------------------------------
# CLGSI, official variant
# --------------------------------------------------------------------------------------------


def test_clgsi_official_hand_computed_single_sample() -> None:
    # B = 1. Each modality pair (p, q) has N = exp(w0·s_pq/τ) + exp(w0·s_pp/τ) with s_pp = 1.
    # The two negative matrices are masked to 0 and contribute exp(0) = 1 each, so
    # Den = N + 2 and the loss is not 0.
    tau = 0.5
    t, a, v = t64([[1.0, 0.0]]), t64([[0.0, 2.0]]), t64([[3.0, 0.0]])
    w0 = 1.5 * math.tanh(0.8)

    def ell(s_pq: float) -> float:
        num = math.exp(w0 * s_pq / tau) + math.exp(w0 * 1.0 / tau)
        return -math.log(num / (num + 2.0))

    # ℓ(p, q) = ℓ(q, p) here; cosines: VA = 0, VT = 1, TA = 0.
    expected = ell(0.0) + ell(1.0) + ell(0.0)
    loss = OfficialIntensityContrastiveLoss(temperature=tau)(t, a, v, t64([2.0]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_clgsi_official_reference_values_from_notes() -> None:
    # Inputs and values from the team's notes on the authors' code (an independent float64
    # transcription). They also agree with the authors' function run in float64.
    t = t64([[1, 0, 2], [0.5, 1, 0], [0, 0, 1], [2, 1, 1]])
    a = t64([[0, 1, 1], [1, 1, 0], [0.3, 0, 2], [1, 0, 0]])
    v = t64([[1, 1, 1], [0, 2, 1], [1, 0, 0], [0, 0.5, 3]])
    loss_fn = OfficialIntensityContrastiveLoss(temperature=0.03)
    loss = loss_fn(t, a, v, t64([-2.4, 1.2, 1.4, 0.0]))
    assert loss.item() == pytest.approx(0.15392958936194262, rel=1e-13)
    tiny = loss_fn(t, a, v, t64([-0.8, 0.6, 0.4, 0.0]))
    assert tiny.item() == pytest.approx(1.7861362952705168e-08, rel=1e-8, abs=1e-16)


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("weighted", [True, False])
def test_clgsi_official_matches_authors_math(batch: int, weighted: bool) -> None:
    # A 0.2 grid gives ties, zeros, and gaps of exactly 1.2 (D = κ), where the mapping
    # ((y + 3) / 3) - 1 decides the pair's side by float rounding.
    t, a, v = _random_features(batch, 6, 3, seed=10 + batch)
    for seed in range(3):
        y = _grid_labels(batch, seed=seed, step=0.2)
        for tau in (0.03, 0.2):
            loss_fn = OfficialIntensityContrastiveLoss(temperature=tau, weighted=weighted)
            expected = clgsi_official_reference(t, a, v, y, tau=tau, weighted=weighted)
            assert loss_fn(t, a, v, y).item() == pytest.approx(expected, rel=1e-10, abs=1e-13)


def test_clgsi_official_boundary_follows_the_code() -> None:
    # In float64, ((1.2 + 3) / 3) - 1 = 0.40000000000000013 > κ: the code calls (0, 1.2)
    # negative, which the loop reference reproduces. The paper variant calls it positive.
    t, a, v = _random_features(2, 3, 3, seed=4)
    y = t64([0.0, 1.2])
    official = OfficialIntensityContrastiveLoss(temperature=0.2)
    assert official(t, a, v, y).item() == pytest.approx(
        clgsi_official_reference(t, a, v, y, tau=0.2), rel=1e-12
    )
    distance = abs(((1.2 + 3) / 3 - 1) - ((0.0 + 3) / 3 - 1))
    assert distance > KAPPA
    assert IntensityGuidedContrastiveLoss(temperature=0.03)(t, a, v, y).item() == 0.0


# --------------------------------------------------------------------------------------------
# CLGSI, common properties
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_clgsi_dtypes_gradients_and_permutation(variant: str) -> None:
    t, a, v = _random_features(6, 8, 3, seed=5)
    y = t64([-2.4, 1.2, 1.4, 0.0, 0.0, -0.6])
    loss_fn = CLGSI_LOSSES[variant](temperature=0.03)
    ref = loss_fn(t, a, v, y)
    assert ref.dtype == torch.float64 and ref.dim() == 0

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        low = [x.to(dtype) for x in (t, a, v)]
        out = loss_fn(*low, y.float())
        assert out.dtype == dtype
        # Computed in float32 inside: equal to the float64 loss of the rounded inputs, up to
        # the rounding of the result.
        exact = loss_fn(*(x.double() for x in low), y.float())
        assert out.double().item() == pytest.approx(exact.item(), rel=1e-2)

    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = loss_fn(t[perm], a[perm], v[perm], y[perm])
    assert permuted.item() == pytest.approx(ref.item(), rel=1e-12)

    leaves = [x.clone().requires_grad_() for x in (t, a, v)]
    loss_fn(*leaves, y).backward()
    for x in leaves:
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_clgsi_gradcheck() -> None:
    t, a, v = (x.requires_grad_() for x in _random_features(3, 3, 3, seed=6))
    y = t64([0.0, 0.6, 2.0])
    for variant in ("paper", "official"):
        loss_fn = CLGSI_LOSSES[variant](temperature=0.3)
        assert torch.autograd.gradcheck(lambda t, a, v, f=loss_fn: f(t, a, v, y), (t, a, v))


def test_clgsi_rejects_bad_inputs() -> None:
    t, a, v = _random_features(3, 4, 3, seed=7)
    loss_fn = IntensityGuidedContrastiveLoss(temperature=0.03)
    with pytest.raises(ValueError):
        loss_fn(t, a[:, :3], v, t64([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError):
        loss_fn(t, a, v, t64([0.0, 1.0]))
    for loss in CLGSI_LOSSES.values():
        with pytest.raises(ValueError):
            loss(temperature=0.0)


# --------------------------------------------------------------------------------------------
# ConKI: independent loop reference
# --------------------------------------------------------------------------------------------


def conki_reference(pan, specific, y, tau=0.07, use_n1=True, denominator="sample") -> float:
    """Section 3.4, pair by pair. Representations are (knowledge, modality, sample)."""
    num_mod, batch = len(pan), len(y)
    vec = {}
    for m in range(num_mod):
        for i in range(batch):
            vec[("O", m, i)] = pan[m][i].tolist()
            vec[("A", m, i)] = specific[m][i].tolist()
    interval = [round(val) for val in y.tolist()]  # Python's round: half to even
    total = 0.0
    for i in range(batch):
        anchors = [key for key in vec if key[2] == i]
        positives, all_pairs = [], []
        for p in anchors:
            for q in vec:
                if q == p:
                    continue
                f = math.exp(_cos(vec[p], vec[q]) / tau)
                same_knowledge = p[0] == q[0]
                is_pos = same_knowledge and (q[2] == i or interval[q[2]] == interval[i])
                is_n1 = not same_knowledge
                if is_n1 and not use_n1:
                    continue
                all_pairs.append((p, f))
                if is_pos:
                    positives.append((p, f))
        if not positives:
            continue
        if denominator == "sample":
            den_of = {p: sum(f for _, f in all_pairs) for p in anchors}
        else:
            den_of = {p: sum(f for a, f in all_pairs if a == p) for p in anchors}
        total += -sum(math.log(f / den_of[p]) for p, f in positives) / len(positives)
    return total


# --------------------------------------------------------------------------------------------
# ConKI
# --------------------------------------------------------------------------------------------


def test_conki_hand_computed_two_samples_one_modality() -> None:
    # M = 1: representations O^1, A^1, O^2, A^2. Labels 0.6 and 1.4 both round to 1.
    tau = 0.5
    r = 1 / math.sqrt(2)
    pan = [t64([[1.0, 0.0], [1.0, 1.0]])]  # O^1, O^2
    specific = [t64([[0.0, 1.0], [0.0, 4.0]])]  # A^1, A^2
    y = t64([0.6, 1.4])
    # Sample 1, anchors O^1 and A^1:
    #   (O1,A1) N1 cos 0; (O1,O2) P2 cos r; (O1,A2) N1 cos 0;
    #   (A1,O1) N1 cos 0; (A1,O2) N1 cos r; (A1,A2) P2 cos 1.
    den1 = 3 * math.exp(0 / tau) + 2 * math.exp(r / tau) + math.exp(1 / tau)
    loss1 = -0.5 * (math.log(math.exp(r / tau) / den1) + math.log(math.exp(1 / tau) / den1))
    # Sample 2, anchors O^2 and A^2:
    #   (O2,A2) N1 cos r; (O2,O1) P2 cos r; (O2,A1) N1 cos r;
    #   (A2,O2) N1 cos r; (A2,O1) N1 cos 0; (A2,A1) P2 cos 1.
    den2 = 4 * math.exp(r / tau) + math.exp(0 / tau) + math.exp(1 / tau)
    loss2 = -0.5 * (math.log(math.exp(r / tau) / den2) + math.log(math.exp(1 / tau) / den2))
    loss = HierarchicalContrastiveLoss(temperature=tau)(pan, specific, y)
    assert loss.item() == pytest.approx(loss1 + loss2, rel=1e-12)  # a sum over samples

    # w/o N1: only the two P2 pairs of each sample stay in its denominator.
    den = math.exp(r / tau) + math.exp(1 / tau)
    no_n1 = -(math.log(math.exp(r / tau) / den) + math.log(math.exp(1 / tau) / den))
    loss_no_n1 = HierarchicalContrastiveLoss(temperature=tau, use_n1=False)(pan, specific, y)
    assert loss_no_n1.item() == pytest.approx(no_n1, rel=1e-12)

    # Per-anchor denominators: O^1's pairs are {A1, O2, A2}, A^1's are {O1, O2, A2}.
    den_o1 = 2 * math.exp(0 / tau) + math.exp(r / tau)
    den_a1 = math.exp(0 / tau) + math.exp(r / tau) + math.exp(1 / tau)
    den_o2 = 3 * math.exp(r / tau)
    den_a2 = math.exp(r / tau) + math.exp(0 / tau) + math.exp(1 / tau)
    anchor = -0.5 * (math.log(math.exp(r / tau) / den_o1) + math.log(math.exp(1 / tau) / den_a1))
    anchor += -0.5 * (math.log(math.exp(r / tau) / den_o2) + math.log(math.exp(1 / tau) / den_a2))
    loss_anchor = HierarchicalContrastiveLoss(temperature=tau, denominator="anchor")
    assert loss_anchor(pan, specific, y).item() == pytest.approx(anchor, rel=1e-12)


def test_conki_single_sample_has_only_p1_and_n1() -> None:
    # All pan vectors along e1 and all specific vectors along e2. Each of the 6 anchors has
    # 2 P1 partners (cos 1) and 3 N1 partners (cos 0): |P| = 12, and the denominator holds
    # 12 e^{1/τ} + 18 e^0.
    tau = 0.07
    pan = [t64([[1.0, 0.0]]), t64([[2.0, 0.0]]), t64([[0.5, 0.0]])]
    specific = [t64([[0.0, 1.0]]), t64([[0.0, 3.0]]), t64([[0.0, 0.1]])]
    masks = hierarchical_pair_masks(t64([-1.8]), 3)
    assert [int(masks[k].sum()) for k in ("P1", "P2", "N1", "N2")] == [12, 0, 18, 0]
    expected = math.log(12 * math.exp(1 / tau) + 18) - 1 / tau
    loss = HierarchicalContrastiveLoss(temperature=tau)(pan, specific, t64([-1.8]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_conki_figure4_pair_sets() -> None:
    # Appendix A.1, Figure 4: samples 1 and 2 share a sentiment interval, sample 3 does not.
    # Modality order t, v, a; labels 1.2, 0.8 -> 1 and -2.0 -> -2.
    labels = t64([1.2, 0.8, -2.0])
    masks = hierarchical_pair_masks(labels, num_modalities=3)
    mods, batch = "tva", 3

    def name(r: int) -> str:  # row r -> e.g. "O_t^1"
        knowledge = "OA"[r // (3 * batch)]
        return f"{knowledge}_{mods[(r // batch) % 3]}^{r % batch + 1}"

    def unordered(mask: torch.Tensor) -> set[frozenset[str]]:
        return {frozenset((name(p), name(q))) for p, q in mask.nonzero().tolist()}

    def ordered(mask: torch.Tensor) -> set[tuple[str, str]]:
        return {(name(p), name(q)) for p, q in mask.nonzero().tolist()}

    # P1^B exactly as listed in the appendix (18 unordered pairs).
    listed_p1 = [
        ("O_t^{k}", "O_v^{k}"), ("O_t^{k}", "O_a^{k}"), ("O_a^{k}", "O_v^{k}"),
        ("A_t^{k}", "A_v^{k}"), ("A_t^{k}", "A_a^{k}"), ("A_a^{k}", "A_v^{k}"),
    ]  # fmt: skip
    paper_p1 = {frozenset((p.format(k=k), q.format(k=k))) for k in (1, 2, 3) for p, q in listed_p1}
    assert unordered(masks["P1"]) == paper_p1
    assert masks["P1"].sum() == 2 * len(paper_p1)  # ordered: both directions

    # P2: the "1"s without red borders, pairs across samples 1 and 2, same knowledge, any
    # modalities. (The appendix's written list of P2^B also names pairs with sample 3, which
    # contradicts the caption and Section 3.4; the caption is followed.)
    expected_p2 = {
        (f"{k}_{m}^{i}", f"{k}_{n}^{j}")
        for k in "OA" for m in mods for n in mods for i, j in ((1, 2), (2, 1))
    }  # fmt: skip
    assert ordered(masks["P2"]) == expected_p2
    listed_p2_between_1_and_2 = [
        ("O_t^1", "O_t^2"), ("O_t^1", "O_v^2"), ("O_t^1", "O_a^2"), ("O_v^1", "O_v^2"),
        ("O_v^1", "O_a^2"), ("O_a^1", "O_a^2"), ("A_t^1", "A_t^2"), ("A_t^1", "A_v^2"),
        ("A_t^1", "A_a^2"), ("A_v^1", "A_v^2"), ("A_v^1", "A_a^2"), ("A_a^1", "A_a^2"),
    ]  # fmt: skip
    assert set(listed_p2_between_1_and_2) <= expected_p2

    # N1: the blue zone, every (pan, specific) pair in either order, same sample included.
    pan_names = {f"O_{m}^{i}" for m in mods for i in (1, 2, 3)}
    spec_names = {f"A_{m}^{i}" for m in mods for i in (1, 2, 3)}
    expected_n1 = {(p, q) for p in pan_names for q in spec_names}
    expected_n1 |= {(q, p) for p, q in expected_n1}
    assert ordered(masks["N1"]) == expected_n1

    # N2: the remaining white cells, same knowledge between sample 3 and samples 1, 2.
    expected_n2 = {
        (f"{k}_{m}^{i}", f"{k}_{n}^{j}")
        for k in "OA" for m in mods for n in mods
        for i, j in ((1, 3), (3, 1), (2, 3), (3, 2))
    }  # fmt: skip
    assert ordered(masks["N2"]) == expected_n2

    # The four sets partition all pairs except the diagonal.
    stacked = torch.stack([masks[k] for k in ("P1", "P2", "N1", "N2")]).sum(0)
    assert torch.equal(stacked, 1 - torch.eye(18, dtype=stacked.dtype))


def test_conki_rounding_half_to_even() -> None:
    # torch.round: 0.5 -> 0, -0.5 -> -0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2, 0.4999 -> 0.
    labels = t64([0.5, -0.5, 1.5, 2.5, -2.5, 0.4999])
    masks = hierarchical_pair_masks(labels, num_modalities=1)
    p2 = masks["P2"][:6, :6].int()  # pan block, M = 1: row i is O^i
    same = [[1, 1, 0, 0, 0, 1], [1, 1, 0, 0, 0, 1], [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 1]]  # fmt: skip
    expected = torch.tensor(same) * (1 - torch.eye(6, dtype=torch.int64))
    assert torch.equal(p2, expected)
    assert [round(x) for x in labels.tolist()] == [0, 0, 2, 2, -2, 0]


def test_conki_batch_in_one_interval_has_no_n2() -> None:
    pan = _random_features(4, 5, 3, seed=20)
    specific = _random_features(4, 5, 3, seed=21)
    y = t64([0.6, 1.4, 1.0, 0.51])  # all round to 1
    masks = hierarchical_pair_masks(y, 3)
    assert masks["N2"].sum() == 0
    # Each anchor: 2 P1, 3 P2 with each of the 3 other samples, 12 N1.
    assert masks["P1"].sum(1).unique().tolist() == [2]
    assert masks["P2"].sum(1).unique().tolist() == [9]
    loss = HierarchicalContrastiveLoss()(pan, specific, y)
    assert loss.item() == pytest.approx(conki_reference(pan, specific, y), rel=1e-10)


def test_conki_without_n1_changes_the_value() -> None:
    pan = _random_features(5, 6, 3, seed=22)
    specific = _random_features(5, 6, 3, seed=23)
    y = t64([0.2, -1.4, 2.6, 0.0, -1.0])
    full = HierarchicalContrastiveLoss()(pan, specific, y)
    no_n1 = HierarchicalContrastiveLoss(use_n1=False)(pan, specific, y)
    # Dropping N1 removes positive terms from every denominator: the loss strictly drops.
    assert no_n1.item() < full.item() - 1e-3
    assert no_n1.item() == pytest.approx(conki_reference(pan, specific, y, use_n1=False), rel=1e-10)


def test_conki_sample_without_positives_contributes_zero() -> None:
    # M = 1, labels in different intervals: no sample has a positive pair.
    pan = [x.requires_grad_() for x in _random_features(2, 3, 1, seed=24)]
    specific = [x.requires_grad_() for x in _random_features(2, 3, 1, seed=25)]
    for use_n1 in (True, False):
        for denominator in ("sample", "anchor"):
            loss_fn = HierarchicalContrastiveLoss(use_n1=use_n1, denominator=denominator)
            loss = loss_fn(pan, specific, t64([-2.0, 2.0]))
            assert loss.item() == 0.0
            loss.backward()
            assert all(torch.isfinite(x.grad).all() for x in (*pan, *specific))


@pytest.mark.parametrize("num_mod", [1, 2, 3])
@pytest.mark.parametrize("denominator", ["sample", "anchor"])
@pytest.mark.parametrize("use_n1", [True, False])
def test_conki_matches_loop_reference(num_mod: int, denominator: str, use_n1: bool) -> None:
    for batch in (1, 2, 5):
        pan = _random_features(batch, 4, num_mod, seed=30 + batch)
        specific = _random_features(batch, 4, num_mod, seed=40 + batch)
        y = _grid_labels(batch, seed=batch, step=0.5)  # exact halves: rounding ties
        for tau in (0.07, 0.5):
            loss_fn = HierarchicalContrastiveLoss(tau, use_n1=use_n1, denominator=denominator)
            expected = conki_reference(pan, specific, y, tau, use_n1, denominator)
            assert loss_fn(pan, specific, y).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_conki_dtypes_gradients_and_permutation() -> None:
    pan = _random_features(6, 8, 3, seed=50)
    specific = _random_features(6, 8, 3, seed=51)
    y = t64([-2.4, 1.2, 1.4, 0.0, 0.5, -0.6])
    loss_fn = HierarchicalContrastiveLoss()
    ref = loss_fn(pan, specific, y)
    assert ref.dtype == torch.float64 and ref.dim() == 0

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        low_pan, low_spec = [x.to(dtype) for x in pan], [x.to(dtype) for x in specific]
        out = loss_fn(low_pan, low_spec, y.float())
        assert out.dtype == dtype
        exact = loss_fn([x.double() for x in low_pan], [x.double() for x in low_spec], y)
        assert out.double().item() == pytest.approx(exact.item(), rel=1e-2)

    perm = torch.tensor([2, 5, 0, 3, 1, 4])
    permuted = loss_fn([x[perm] for x in pan], [x[perm] for x in specific], y[perm])
    assert permuted.item() == pytest.approx(ref.item(), rel=1e-12)

    leaves = [x.clone().requires_grad_() for x in (*pan, *specific)]
    loss_fn(leaves[:3], leaves[3:], y).backward()
    for x in leaves:
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_conki_gradcheck() -> None:
    pan = [x.requires_grad_() for x in _random_features(3, 3, 2, seed=60)]
    specific = [x.requires_grad_() for x in _random_features(3, 3, 2, seed=61)]
    y = t64([0.4, 0.6, -1.0])
    for denominator in ("sample", "anchor"):
        loss_fn = HierarchicalContrastiveLoss(0.5, denominator=denominator)
        assert torch.autograd.gradcheck(
            lambda *xs, f=loss_fn: f(list(xs[:2]), list(xs[2:]), y), (*pan, *specific)
        )


def test_conki_rejects_bad_inputs() -> None:
    pan = _random_features(3, 4, 3, seed=70)
    loss_fn = HierarchicalContrastiveLoss()
    with pytest.raises(ValueError):
        loss_fn(pan, pan[:2], t64([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError):
        loss_fn([], [], t64([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError):
        loss_fn(pan, pan, t64([0.0, 1.0]))
    with pytest.raises(ValueError):
        HierarchicalContrastiveLoss(denominator="pair")
