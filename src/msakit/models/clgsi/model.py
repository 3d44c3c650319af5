"""CLGSI: Contrastive Learning Guided by Sentiment Intensity (Yang et al., NAACL Findings 2024).

Reads top to bottom: building blocks (GLFK and its ablation variants, Subnet, head), then the
model; its config, presets and registration are the package's other modules. Sections refer
to the paper; every reading chosen is in docs/readings.md.

* Encoders (Sec. 3.1): BERT for text; audio and vision pass 2-layer Transformer encoders on their
  raw feature width (authors' config: feed-forward 2048, heads per dataset). msakit masks padding.
* Common features (Sec. 3.2): T_c = ReLU(FC([CLS])), A_c / V_c = ReLU(FC(last valid frame)),
  each in R^{d_c}; the contrastive loss (Sec. 3.4) acts on them; GLFK fuses [V_c, T_c, A_c].
* Specific features (Sec. 3.3): Subnet = GAP over valid positions, then
  sigma_2(W_2 sigma_1(W_1 x)), W_1: d_m -> d_m/r, W_2: d_m/r -> d_s (ReLU, Sigmoid). The paper
  writes r = 8 (W_1 in R^{(d_m/8) x d_m}) on every data set; the authors' MOSI config uses r = 2
  (``--preset authors``).
* Head (Sec. 3.5): a 3-layer MLP on [I_t; I_v; I_a; F_k], as in the authors' code
  (dropout, 4d_c -> 3d_f, 3d_f -> 2d_f, ReLU, BatchNorm, 2d_f -> 1); L1 task loss + gamma * L_cl.

Readings chosen where the paper is silent: the [CLS] vector is BERT's last hidden state at
position 0 (authors' code); GLFK's stack order is the paper's [V_c, T_c, A_c] (the code stacks
T, A, V; the order only permutes three learned weights).

Ablations: ``contrastive``/``weighted`` (Table 3), ``fusion`` (Table 4: add, concat, gk, lfk;
Table 8: transformer, with modality-type embeddings), ``use_specific=False`` and
``use_common=False`` (Table 5; "w/o Con" removes the whole common-feature module of Sec. 3.2,
L_cl included); ``fusion="none"`` keeps T_c, A_c, V_c and L_cl but no F_k in the head.

The authors' released code computes some steps differently (``docs/readings.md``, "CLGSI: paper
vs the authors' code"); each is a switch, off by default:

* ``encoder_mask=False``: the audio/vision Transformers attend to every padded frame of the
  file's full padded length (no mask, padding not zeroed).
* ``common_frame="last_padded"``: A_c / V_c read index -1 of the padded output, not the last
  valid frame.
* ``subnet_pool="padded"``: the Subnet's GAP averages all padded positions (text tokens too).
* ``clone_encoder_layers=True``: every audio/vision encoder layer starts from the same weights
  (``nn.TransformerEncoder`` deep-copies one layer).

With any of the first three, batches keep the file's full padded length (:meth:`reads_padding`).
The authors' head concatenates [F_k; I_t; I_a; I_v] and GLFK stacks [T_c, A_c, V_c]: the same
functions as msakit's up to a permutation of learned weights, which ``msakit import-weights``
applies (:mod:`msakit.models.import_weights`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from msakit.core.errors import MsakitError
from msakit.encoders.packed_text import run_text_encoder
from msakit.encoders.sequence import SequenceEncoder, last_valid, masked_mean
from msakit.losses import IntensityGuidedContrastiveLoss, OfficialIntensityContrastiveLoss
from msakit.models.base import (
    LOCAL,
    Batch,
    Dims,
    LossContext,
    LossOutput,
    ModelOutput,
    MSAModel,
    groups_by_prefix,
    l1_task,
)
from msakit.models.clgsi.config import (
    FUSIONS,
    PLOT_COMMON,
    PLOT_SPECIFIC,
    CLGSIConfig,
)

LOSSES: dict[
    str, type[IntensityGuidedContrastiveLoss] | type[OfficialIntensityContrastiveLoss]
] = {"paper": IntensityGuidedContrastiveLoss, "official": OfficialIntensityContrastiveLoss}
"""CLGSI's contrastive loss by ``variant``: the paper's (Sec. 3.4) or the released code's."""


class GLFK(nn.Module):
    """Global-Local-Fine-Knowledge fusion of the stacked common features (Sec. 3.2, Fig. 2a).

    F_c = [V_c, T_c, A_c] in R^{d_c x 3} is seen as a 1-channel d_c x 3 image.
    Global: a (1 x 3) conv compresses the 3 modalities to 1 column (d_c x 1).
    Local: a 1x1 conv expands to beta/2 channels; PReLU (authors' code).
    Fine: a 1x1 conv expands to beta channels.
    Knowledge: a 1x1 conv reduces to 1 channel; tanh (authors' code). Output (B, d_c).

    ``parts`` selects the ablations of Table 4: "glfk", "gk" (no Local/Fine: Global then
    Knowledge 1 -> 1) and "lfk" (no Global: the 3 modality columns enter Local as 3 channels).
    """

    def __init__(self, beta: int = 16, parts: str = "glfk") -> None:
        super().__init__()
        self.parts = parts
        self.global_conv = nn.Conv2d(1, 1, kernel_size=(1, 3)) if "g" in parts else None
        if "l" in parts:
            local_in = 1 if self.global_conv is not None else 3
            self.local: nn.Sequential | None = nn.Sequential(
                nn.Conv2d(local_in, beta // 2, 1), nn.PReLU())
            self.fine: nn.Conv2d | None = nn.Conv2d(beta // 2, beta, 1)
            self.knowledge = nn.Conv2d(beta, 1, 1)
        else:
            self.local = self.fine = None
            self.knowledge = nn.Conv2d(1, 1, 1)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """stacked (B, d_c, 3) -> (B, d_c).

        The convolutions are computed as what they are, linear maps over the channel axis at
        each of the d_c positions (kernel (1 x 3) over the modality axis, then 1x1): the same
        parameters and the same math as ``nn.Conv2d``, without its im2col overhead on CPUs.
        """
        x = stacked  # (B, d_c, channels): modalities first, then conv channels
        if self.global_conv is not None:
            x = _conv_as_linear(self.global_conv, x)  # (B, d_c, 1)
        if self.local is not None:
            conv, prelu = self.local
            assert self.fine is not None  # built with self.local
            x = prelu(_conv_as_linear(cast(nn.Conv2d, conv), x))  # (B, d_c, beta/2)
            x = _conv_as_linear(self.fine, x)  # (B, d_c, beta)
        return torch.tanh(_conv_as_linear(self.knowledge, x)).squeeze(-1)  # (B, d_c)


def _conv_as_linear(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A Conv2d whose kernel spans the whole channel-last axis, applied as a linear map."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class TransformerFusion(nn.Module):
    """Appendix D baseline: a Transformer encoder (8 heads) over the 3 common features.

    The three tokens [V_c, T_c, A_c] get learnable modality-type embeddings (one d_c vector per
    stack position, added before the first layer). Without them self-attention and the mean are
    permutation-equivariant/invariant, so the fusion could not tell the modalities apart. The
    paper says only "a standard Transformer encoder" (see docs/readings.md).
    """

    def __init__(self, dim: int, layers: int, heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.modality_embedding = nn.Parameter(torch.randn(3, dim) * 0.02)  # (3, d_c)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """stacked (B, d_c, 3) -> mean over the 3 modality tokens (B, d_c)."""
        tokens = stacked.transpose(1, 2) + self.modality_embedding  # (B, 3, d_c)
        return self.encoder(tokens).mean(dim=1)


class CommonFusion(nn.Module):
    """The common-feature extractor: GLFK or one of the ablations of Tables 4 and 8.

    ``"none"`` fuses nothing (``out_dim`` 0): no common feature reaches the head, while T_c,
    A_c, V_c and the contrastive loss on them remain (an earlier reading of "w/o Con").
    """

    def __init__(self, kind: str, dim: int, *, beta: int, layers: int, heads: int) -> None:
        super().__init__()
        if kind not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {kind!r}")
        self.kind = kind
        self.out_dim = {"concat": 3 * dim, "none": 0}.get(kind, dim)
        if kind in ("glfk", "gk", "lfk"):
            self.net: nn.Module | None = GLFK(beta, parts=kind)
        elif kind == "transformer":
            self.net = TransformerFusion(dim, layers, heads)
        else:
            self.net = None

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """stacked (B, d_c, 3) -> (B, out_dim)."""
        if self.kind == "none":
            return stacked.new_zeros(stacked.shape[0], 0)
        if self.kind == "add":
            return stacked.sum(dim=-1)
        if self.kind == "concat":
            return stacked.transpose(1, 2).flatten(1)
        assert self.net is not None  # built for every other kind
        return self.net(stacked)


class Subnet(nn.Module):
    """Specific features (Sec. 3.3): GAP over valid frames, d_m -> d_m/r -> d_s, ReLU, Sigmoid."""

    def __init__(self, dim: int, out_dim: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, out_dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d_m), mask (B, L) -> (B, d_s)."""
        return torch.sigmoid(self.up(F.relu(self.down(masked_mean(x, mask)))))


class Projection(nn.Module):
    """Dropout, FC to d_c, ReLU: the common representation of one modality."""

    def __init__(self, dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.dropout(x)))


class Head(nn.Module):
    """The 3-layer MLP (authors' code): dropout, in -> 3d_f, 3d_f -> 2d_f, ReLU, BN, 2d_f -> 1."""

    def __init__(self, in_dim: int, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, 3 * width),
            nn.Linear(3 * width, 2 * width),
            nn.ReLU(),
            nn.BatchNorm1d(2 * width),
            nn.Linear(2 * width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class CLGSI(MSAModel):
    """The CLGSI model, built from its :class:`CLGSIConfig`."""

    def __init__(self, config: CLGSIConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("clgsi needs a BERT text encoder")
        c = self.config = CLGSIConfig.from_dict(config)
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        d_text: int = bert.hidden_size
        d_c, d_s = c.common_dim, c.specific_dim
        self.text_encoder = text_encoder
        shared: dict[str, Any] = {"feedforward": c.feedforward, "dropout": c.encoder_dropout}
        self.audio_encoder = SequenceEncoder(
            dims.audio, c.audio_heads, layers=c.audio_layers, **shared
        )
        self.vision_encoder = SequenceEncoder(
            dims.vision, c.vision_heads, layers=c.vision_layers, **shared
        )
        if c.clone_encoder_layers:
            self.audio_encoder.clone_first_layer()
            self.vision_encoder.clone_first_layer()
        head_in = 0
        # Sec. 3.2: the contrastive loss lives in the common-feature module, so "w/o Con"
        # (use_common=False) removes T_c, A_c, V_c, the fusion and L_cl, whatever `contrastive`
        # says (docs/readings.md, "CLGSI: ablations").
        self.uses_contrastive = bool(c.use_common and c.contrastive)
        if c.use_common:
            self.project_text = Projection(d_text, d_c, c.projection_dropout)
            self.project_audio = Projection(dims.audio, d_c, c.projection_dropout)
            self.project_vision = Projection(dims.vision, d_c, c.projection_dropout)
            self.fusion = CommonFusion(
                c.fusion, d_c, beta=c.beta, layers=c.fusion_layers, heads=c.fusion_heads
            )
            head_in += self.fusion.out_dim
        if c.use_specific:
            r = c.subnet_reduction
            self.subnet_text = Subnet(d_text, d_s, r)
            self.subnet_audio = Subnet(dims.audio, d_s, r)
            self.subnet_vision = Subnet(dims.vision, d_s, r)
            head_in += 3 * d_s
        self.head = Head(head_in, c.head_dim, c.head_dropout)
        self.contrastive = (
            contrastive_loss(c)
            if self.uses_contrastive
            else None
        )
        # L_cl before its weight gamma (loss = task + gamma * contrastive), on the global batch.
        self.loss_parts = ("contrastive",) if self.uses_contrastive else ()

    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """text (B, 3, Lt) MMSA rows -> {"seq_hidden": BERT last hidden state (B, Lt, d_t)}."""
        # Without padding tokens unless padded positions are read (``reads_padding``).
        out = run_text_encoder(self.text_encoder, text, packed=not self.reads_padding())
        return {"seq_hidden": out.last_hidden_state}

    def reads_padding(self) -> bool:
        c = self.config
        return (
            not c.encoder_mask
            or c.common_frame == "last_padded"
            or c.subnet_pool == "padded"
        )

    def plot_representations(self) -> dict[str, str]:
        return dict(PLOT_COMMON if self.config.use_common else PLOT_SPECIFIC)

    def _lengths(self, x: torch.Tensor, lengths: torch.Tensor, padded: bool) -> torch.Tensor:
        """The lengths a step reads: the valid ones, or the full padded length of ``x``."""
        return torch.full_like(lengths, x.size(1)) if padded else lengths

    def forward(self, batch: Batch) -> ModelOutput:
        c = self.config
        text_mask = batch.text[:, 1] > 0  # (B, Lt)
        text_h = self.cached_text_features(batch)["seq_hidden"]  # (B, Lt, d_t)
        audio, vision = batch.audio, batch.vision
        unmasked = not c.encoder_mask
        full = self.reads_padding()  # padded output frames are read: compute them all
        audio_h, audio_mask = self.audio_encoder(
            audio, self._lengths(audio, batch.audio_lengths, unmasked), full_output=full
        )
        vision_h, vision_mask = self.vision_encoder(
            vision, self._lengths(vision, batch.vision_lengths, unmasked), full_output=full
        )
        reps: dict[str, torch.Tensor] = {}
        parts = []
        if self.config.use_common:
            last_padded = c.common_frame == "last_padded"
            audio_at = self._lengths(audio, batch.audio_lengths, last_padded)
            vision_at = self._lengths(vision, batch.vision_lengths, last_padded)
            reps["text"] = self.project_text(text_h[:, 0])  # [CLS]
            reps["audio"] = self.project_audio(last_valid(audio_h, audio_at))
            reps["vision"] = self.project_vision(last_valid(vision_h, vision_at))
        if self.config.use_common and self.fusion.out_dim:
            stacked = torch.stack([reps["vision"], reps["text"], reps["audio"]], dim=-1)
            reps["common"] = self.fusion(stacked)  # F_k
        if self.config.use_specific:
            if c.subnet_pool == "padded":  # GAP over every padded position
                text_mask = torch.ones_like(text_mask)
                audio_mask = torch.ones_like(audio_mask)
                vision_mask = torch.ones_like(vision_mask)
            reps["specific_text"] = self.subnet_text(text_h, text_mask)
            reps["specific_vision"] = self.subnet_vision(vision_h, vision_mask)
            reps["specific_audio"] = self.subnet_audio(audio_h, audio_mask)
            parts += [reps["specific_text"], reps["specific_vision"], reps["specific_audio"]]
        if "common" in reps:
            parts.append(reps["common"])
        prediction = self.head(torch.cat(parts, dim=-1))
        return ModelOutput(prediction=prediction, representations=reps)

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        task = l1_task(output, batch, ctx)
        if self.contrastive is None:
            return LossOutput(task, task)
        reps = output.representations
        cl = self.contrastive(
            ctx.gather(reps["text"]), ctx.gather(reps["audio"]), ctx.gather(reps["vision"]),
            ctx.gather(batch.labels.to(output.prediction.dtype)),
        )
        return LossOutput(task + self.config.gamma * cl, task, {"contrastive": cl})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {
            "text": ("text_encoder.",),
            "audio": ("audio_encoder.",),
            "vision": ("vision_encoder.",),
        })


def contrastive_loss(
    c: CLGSIConfig,
) -> IntensityGuidedContrastiveLoss | OfficialIntensityContrastiveLoss:
    """The contrastive loss ``c`` configures: the class of ``c.variant`` with its κ, g, τ and H
    (under both variants the preset's H: --preset authors 3, simsv2 1, as the released code
    maps them; docs/readings.md, "CLGSI: paper vs the authors' code")."""
    return LOSSES[c.variant](threshold=c.threshold, gain=c.gain, temperature=c.temperature,
                             label_scale=c.label_scale, weighted=c.weighted)
