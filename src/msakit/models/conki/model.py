"""ConKI: Contrastive Knowledge Injection (Yu et al., ACL Findings 2023).

Reads top to bottom: insertion points, building blocks (adapter module, adapter, fusion
network with its MLP head), then the model; its config, presets and registration are the
package's other modules. Sections refer to the paper; every reading chosen is in
docs/readings.md. The two-stage procedure (Algorithm 1): the adapter stage is
:mod:`msakit.models.conki.adapters`, run by :mod:`msakit.training.stages`.

Per modality m in {t, v, a} (Sec. 3.3):

* **Pan-knowledge O_m.** Text: BERT's pooled output (``pooler_output``, tanh(W h_[CLS]) of the
  last layer), Eq. (1). Audio/vision: a per-dataset linear projection of the raw features
  (d_a or d_v -> ``shared_dim``), then a 2-layer Transformer encoder (Eq. 2); its "pooled
  output" is read as the mean of the last layer over the valid frames.
* **Knowledge-specific A_m** (Eq. 3, Fig. 3). An adapter is a chain of modules, each
  FC down (width -> ``adapter_dim``), 2 Transformer layers, FC up (-> width). Module k reads
  the backbone's hidden state at its insertion point plus module k-1's output (0 for the
  first), as in K-Adapter (Wang et al., 2021a), which the paper builds on. Text: modules before
  BERT layers 1, 6 and 11 of 12 (Appendix B); audio/vision: one module before layer 2 of 2.
  A_m is the final module's output pooled like O_m's sequence: the mean over valid
  tokens/frames (``adapter_pool="mean"``; ``"cls"`` takes position 0 instead).
* **Inner-modality fusion** F_m = FC([O_m; A_m]) (Algorithm 1, step 3), a plain linear layer.
* **Fusion network** (Fig. 2): concatenate [F_t; F_v; F_a], weight it element-wise with a
  learned weight (the paper's ⊗), then an MLP gives ŷ. ``fusion="gate"`` (default) reads the
  fusion module as w = sigmoid(W [F_t; F_v; F_a] + b), one weight per element;
  ``fusion="modality"`` reads it as one softmax weight per modality, broadcast over its F_m.
* **Loss** (Eqs. 4, 5): MSE + λ·L_con, with L_con the hierarchical contrastive loss of
  :class:`msakit.losses.HierarchicalContrastiveLoss` (τ = 0.07) on [O_t, O_v, O_a] and
  [A_t, A_v, A_a].

Readings chosen where the paper is silent:

* Insertion points for a backbone of another depth L keep the relative depth: the module
  before layer l (1-based) of the paper's P-layer backbone goes before layer
  floor((l - 1)·L/P + 1/2) + 1, at most L, duplicates dropped (12 layers -> before 1, 6, 11;
  6 layers -> before 1, 4, 6). In Hugging Face terms, the input of layer k + 1 is
  ``hidden_states[k]`` (``hidden_states[0]`` is the embedding output).
* The contrastive loss compares O_t with O_a and O_v by cosine, so the six representations must
  share one width: ``shared_dim`` defaults to the text encoder's hidden size (``None``), and the
  text adapters' widths follow. With the contrastive loss on and text present, another
  ``shared_dim`` is an error.
* The adapter's Transformer layers are post-norm ``nn.TransformerEncoderLayer``s (msakit's
  :class:`~msakit.encoders.sequence.PackedEncoderLayer`: same parameters and math, feed-forward
  on valid positions only) with a feed-forward of 4·``adapter_dim`` and the padding mask of the
  sequence; K-Adapter's residual (module output = input + FC up(...)) is the switch
  ``adapter_residual`` (off: the paper's figure shows the sandwich alone).
* The packaged all-MiniLM-L6-v2 ships no trained pooler, so its pooled output starts from a
  random pooler (frozen with the encoder in stage 1, trained in stage 2).

Ablations (Tables 4 and 5) are config keys: ``modalities`` ("tva", "ta", "tv", "va"),
``use_adapters=False`` (w/o C2: no A_m), ``use_pan_knowledge=False`` (w/o C3: no O_m,
F_m = FC(A_m), the adapters still read the pretrained encoders), ``contrastive=False``
(w/o C4), ``use_n1=False`` (w/o N1); w/o C1 (no external data) is training without
``--adapters``, where the adapters learn at ``adapter_lr``. With one knowledge type only,
L_con keeps that type's pairs (P1, P2, N2; :func:`single_knowledge_loss`).
``pretrained_encoders=False`` re-initialises the text encoder from its config (an earlier
reading of w/o C3, kept under its own name).
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from msakit.core.errors import MsakitError
from msakit.encoders.packed_text import run_text_encoder
from msakit.encoders.packing import pack_layout
from msakit.encoders.sequence import PackedEncoderLayer, SequenceEncoder, masked_mean
from msakit.encoders.text import (
    encoder_layers,
    text_encoder_config,
    text_encoder_from_config,
)
from msakit.losses import HierarchicalContrastiveLoss
from msakit.models.base import (
    LOCAL,
    Batch,
    Dims,
    LossContext,
    LossOutput,
    ModelOutput,
    MSAModel,
    groups_by_prefix,
)
from msakit.models.conki.config import (
    ADAPTER_LAYERS,
    AV_INSERT,
    FEEDFORWARD_RATIO,
    FUSIONS,
    PLOT_NAMES,
    TEXT_INSERT,
    ConKIConfig,
    insertion_points,
    parse_modalities,
)


class AdapterModule(nn.Module):
    """One sandwich module: FC down, 2 Transformer layers, FC up (Fig. 3).

    ``forward(x, padding)``: x (B, L, width), padding (B, L) True on masked positions ->
    (B, L, width). With ``residual`` the input is added back (K-Adapter's reading).
    """

    def __init__(
        self, width: int, inner: int, *, heads: int, dropout: float, residual: bool
    ) -> None:
        super().__init__()
        if inner % heads:
            raise ValueError(f"{heads} adapter heads do not divide adapter_dim {inner}")
        self.residual = residual
        self.down = nn.Linear(width, inner)
        self.layers = nn.ModuleList(
            PackedEncoderLayer(
                inner,
                heads,
                dim_feedforward=FEEDFORWARD_RATIO * inner,
                dropout=dropout,
                batch_first=True,
            )
            for _ in range(ADAPTER_LAYERS)
        )
        self.up = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.down(x)  # (B, L, inner)
        layers = cast("list[PackedEncoderLayer]", list(self.layers))  # built above
        layout = pack_layout(padding, layers[0].self_attn.num_heads)
        for layer in layers:
            h = layer.forward_packed(h, padding, layout)
        out = self.up(h)  # (B, L, width); padded positions are never read
        return x + out if self.residual else out


class Adapter(nn.Module):
    """A chain of adapter modules plugged outside a backbone at ``points`` (Eq. 3).

    ``forward(states, padding)``: states = the backbone's hidden states (item k is the input of
    layer k + 1), each (B, L, width) -> the last module's output (B, L, width). Module j reads
    ``states[points[j]]`` + module j-1's output (0 for the first).
    """

    def __init__(
        self,
        points: list[int],
        width: int,
        *,
        inner: int,
        heads: int,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        self.points = list(points)
        self.blocks = nn.ModuleList(
            AdapterModule(width, inner, heads=heads, dropout=dropout, residual=residual)
            for _ in self.points
        )

    def forward(
        self, states: list[torch.Tensor] | tuple[torch.Tensor, ...], padding: torch.Tensor
    ) -> torch.Tensor:
        out = torch.zeros_like(states[self.points[0]])
        for point, module in zip(self.points, self.blocks, strict=True):
            out = module(states[point] + out, padding)
        return out


class FusionNetwork(nn.Module):
    """Concatenation, learned element-wise weighting (the paper's ⊗), MLP -> ŷ (Fig. 2).

    ``forward(parts)``: M tensors (B, d) -> prediction (B,). ``kind="gate"``: w = sigmoid(W x + b)
    with x = [F_1; ...; F_M], one weight per element; ``kind="modality"``: w = softmax(W x + b)
    over the M modalities, each weight broadcast over its F_m. Fused = x ⊗ w.
    """

    def __init__(
        self, kind: str, dim: int, *, num_modalities: int, head_dim: int, dropout: float
    ) -> None:
        super().__init__()
        if kind not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {kind!r}")
        self.kind = kind
        self.dim = dim
        width = dim * num_modalities
        self.weight = nn.Linear(width, width if kind == "gate" else num_modalities)
        self.mlp = nn.Sequential(
            nn.Linear(width, head_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(head_dim, 1)
        )

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(parts, dim=-1)  # (B, M d)
        if self.kind == "gate":
            w = torch.sigmoid(self.weight(x))  # (B, M d)
        else:
            w = torch.softmax(self.weight(x), dim=-1).repeat_interleave(self.dim, dim=-1)
        return self.mlp(x * w).squeeze(-1)  # (B,)


class ConKI(MSAModel):
    """The ConKI model, built from its :class:`ConKIConfig`.

    Parameters of adapters, and only those, have ``adapter`` in their names (``adapter_text``,
    ``adapter_vision``, ``adapter_audio``); they do not depend on the data's raw audio/vision
    sizes, so adapters pretrained on one data set load into a model for another.
    """

    supports_adapters = True

    def __init__(self, config: ConKIConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("conki needs a BERT text encoder")
        c = self.config = ConKIConfig.from_dict(config)
        self.modalities = parse_modalities(c.modalities)
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        d_text = int(bert.hidden_size)
        self.shared_dim = int(c.shared_dim or d_text)
        if c.contrastive and "text" in self.modalities and self.shared_dim != d_text:
            raise ValueError(
                f"the contrastive loss compares O_t ({d_text} wide) with O_a and O_v: shared_dim "
                f"must equal the text encoder's hidden size {d_text} (or be null)"
            )
        self.widths = {"text": d_text, "audio": self.shared_dim, "vision": self.shared_dim}
        self.points: dict[str, list[int]] = {}
        if "text" in self.modalities:
            if not c.pretrained_encoders:  # w/o C3: same architecture, random weights
                text_encoder = text_encoder_from_config(text_encoder_config(text_encoder))
                assert text_encoder is not None  # an encoder's config is never empty
            self.text_encoder = text_encoder
            self.points["text"] = insertion_points(TEXT_INSERT, len(encoder_layers(text_encoder)))
        self._build_sequence_encoders(dims)
        if c.use_adapters:
            for m in self.modalities:
                adapter = Adapter(self.points[m], self.widths[m], inner=c.adapter_dim,
                                  heads=c.adapter_heads, dropout=c.adapter_dropout,
                                  residual=c.adapter_residual)
                setattr(self, f"adapter_{m}", adapter)
        per_modality = int(c.use_pan_knowledge) + int(c.use_adapters)
        self.inner_fusion = nn.ModuleDict(
            {m: nn.Linear(per_modality * self.widths[m], c.fusion_dim) for m in self.modalities}
        )  # F_m = FC([O_m; A_m]), FC(O_m) w/o C2, FC(A_m) w/o C3
        self.fusion = FusionNetwork(c.fusion, c.fusion_dim, num_modalities=len(self.modalities),
                                    head_dim=c.head_dim, dropout=c.head_dropout)
        # With one knowledge type only there is no N1 (see single_knowledge_loss).
        self.contrastive = (
            HierarchicalContrastiveLoss(
                temperature=c.temperature, use_n1=c.use_n1 and self.has_both_knowledges
            )
            if c.contrastive
            else None
        )
        # L_con before its weight lam (loss = task + lam * contrastive), on the global batch.
        self.loss_parts = ("contrastive",) if c.contrastive else ()

    def _build_sequence_encoders(self, dims: Dims) -> None:
        """Audio/vision: a per-dataset input projection (not an adapter parameter, trained in
        both stages) and the Transformer encoder at ``shared_dim``."""
        c = self.config
        for m, raw in (("vision", dims.vision), ("audio", dims.audio)):
            if m in self.modalities:
                setattr(self, f"project_{m}", nn.Linear(raw, self.shared_dim))
                encoder = SequenceEncoder(
                    self.shared_dim, c.encoder_heads, layers=c.encoder_layers,
                    feedforward=c.feedforward, dropout=c.encoder_dropout,
                )
                setattr(self, f"{m}_encoder", encoder)
                self.points[m] = insertion_points(AV_INSERT, c.encoder_layers)

    # ------------------------------------------------------------------ encoding
    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """text (B, 3, Lt) -> {"pooled": O_t (B, d_t)} and, with a text adapter, the hidden
        states it reads: {"seq_hidden_k": (B, Lt, d_t)} for every insertion point k."""
        out = run_text_encoder(self.text_encoder, text, hidden_states=True)  # no padding tokens
        pooled = out.pooler_output
        if pooled is None:  # an encoder without a pooler: fall back to [CLS]
            pooled = out.last_hidden_state[:, 0]
        features = {"pooled": pooled}
        adapter = getattr(self, "adapter_text", None)
        if adapter is not None:
            assert out.hidden_states is not None  # asked for
            for k in adapter.points:
                features[f"seq_hidden_{k}"] = out.hidden_states[k]
        return features

    def encode_text(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """MMSA text rows (or their cached features) -> (O_t (B, d_t), A_t (B, d_t) or None).

        O_t is returned even with ``use_pan_knowledge=False`` (``forward`` leaves it out)."""
        text = batch.text
        mask = text[:, 1] > 0  # (B, Lt)
        features = self.cached_text_features(batch)
        adapter = getattr(self, "adapter_text", None)
        if adapter is None:
            return features["pooled"], None
        hidden = _HiddenStates(features, text.size(-1))
        return features["pooled"], self._pool(adapter(hidden, ~mask), mask)

    def encode_sequence(
        self, m: str, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Audio/vision x (B, L, d_m raw), lengths (B,) -> (O_m (B, d) or None, A_m (B, d) or
        None). Without pan-knowledge (w/o C3) only the layers the adapter reads are run."""
        encoder: SequenceEncoder = getattr(self, f"{m}_encoder")
        adapter = getattr(self, f"adapter_{m}", None)
        use_pan = self.config.use_pan_knowledge
        h = getattr(self, f"project_{m}")(x)  # (B, L, shared_dim)
        h, mask, padding, layout = encoder.prepare(h, lengths)
        depth = len(encoder.layers) if use_pan or adapter is None else max(adapter.points)
        states = [h]
        for k in range(depth):
            states.append(encoder.run_layer(k, states[-1], padding, layout))
        pooled = masked_mean(states[-1], mask) if use_pan else None
        if adapter is None:
            return pooled, None
        return pooled, self._pool(adapter(states, padding), mask)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Adapter output (B, L, d) -> A_m (B, d): mean over valid positions, or position 0."""
        return masked_mean(x, mask) if self.config.adapter_pool == "mean" else x[:, 0]

    def forward(self, batch: Batch) -> ModelOutput:
        reps: dict[str, torch.Tensor] = {}
        pan: torch.Tensor | None
        for m in self.modalities:
            if m == "text":
                pan, specific = self.encode_text(batch)
            else:
                pan, specific = self.encode_sequence(m, batch.sequence(m), batch.lengths(m))
            if self.config.use_pan_knowledge:
                assert pan is not None  # computed with use_pan_knowledge
                reps[f"pan_{m}"] = pan  # O_m
            if specific is not None:
                reps[f"specific_{m}"] = specific  # A_m
        parts = []
        for m in self.modalities:
            both = [reps[k] for k in (f"pan_{m}", f"specific_{m}") if k in reps]
            reps[f"fused_{m}"] = self.inner_fusion[m](torch.cat(both, dim=-1))  # F_m
            parts.append(reps[f"fused_{m}"])
        return ModelOutput(prediction=self.fusion(parts), representations=reps)

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        labels = batch.labels.to(output.prediction.dtype)
        task = ctx.mean((output.prediction - labels) ** 2)  # Eq. (4)
        if self.contrastive is None:
            return LossOutput(task, task)
        reps = output.representations
        all_labels = ctx.gather(labels)
        blocks = [
            [ctx.gather(reps[f"{kind}_{m}"]) for m in self.modalities]
            for kind in ("pan", "specific")
            if f"{kind}_{self.modalities[0]}" in reps
        ]
        if len(blocks) == 2:
            cl = self.contrastive(blocks[0], blocks[1], all_labels)
        else:  # w/o C2 (O_m only) or w/o C3 (A_m only)
            cl = single_knowledge_loss(self.contrastive, blocks[0], all_labels)
        return LossOutput(task + self.config.lam * cl, task, {"contrastive": cl})  # Eq. (5)

    # ------------------------------------------------------------------ groups and stages
    @property
    def has_adapters(self) -> bool:
        return bool(self.config.use_adapters)

    @property
    def has_both_knowledges(self) -> bool:
        """Both O_m and A_m exist (neither w/o C2 nor w/o C3), so N1 pairs exist."""
        return bool(self.config.use_adapters and self.config.use_pan_knowledge)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """text: the text encoder; audio / vision: projection + encoder; adapters: the adapters
        when ``adapter_lr`` is set (else they are in other); other: the rest."""
        own = {"adapters": ("adapter_",)} if self.config.adapter_lr is not None else {}
        return groups_by_prefix(self, {
            **own,
            "text": ("text_encoder.",),
            "audio": ("audio_encoder.", "project_audio."),
            "vision": ("vision_encoder.", "project_vision."),
        })

    def optimizer_settings(self, config: Any) -> dict[str, tuple[float, float]]:
        """The RunConfig's groups, and adapters at ``adapter_lr`` with other's weight decay.

        Adapters are trained only in stage 1 and in stage 2 without ``--adapters`` (w/o C1);
        there the fine-tuning rates (1e-6 on MOSI) are too small for weights that start at
        random, so they get ``adapter_lr`` (default 5e-5, the paper's adapter-training rate;
        docs/readings.md, "ConKI: ablations"). Stage 1 sets it to null: one rate for everything.
        """
        settings = super().optimizer_settings(config)
        if self.config.adapter_lr is not None:
            settings["adapters"] = (float(self.config.adapter_lr), config.weight_decay["other"])
        return settings

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The adapters' weights (every state entry whose name contains ``adapter``)."""
        return {k: v for k, v in self.state_dict().items() if "adapter" in k}

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The audio/vision Transformer encoders' weights (the backbones the adapters read)."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if k.startswith(("audio_encoder.", "vision_encoder."))
        }

    def adapter_signature(self) -> dict[str, Any]:
        """What pretrained adapters must share with this model to plug into it."""
        c = self.config
        return {
            "adapter_dim": c.adapter_dim,
            "adapter_heads": c.adapter_heads,
            "adapter_residual": c.adapter_residual,
            "adapter_pool": c.adapter_pool,
            "shared_dim": self.shared_dim,
            "encoder_heads": c.encoder_heads,
            "encoder_layers": c.encoder_layers,
        }

    def freeze_encoders(self) -> None:
        """Stage 1 (Algorithm 1): fix the text encoder and the audio/vision encoders."""
        for name, param in self.named_parameters():
            if name.startswith(("text_encoder.", "audio_encoder.", "vision_encoder.")):
                param.requires_grad_(False)

    def start_message(self, *, with_adapters: bool = False) -> str | None:
        """A note when stage 2 runs without pretrained adapters (w/o C1)."""
        if with_adapters or not self.has_adapters:
            return None
        lr = self.config.adapter_lr
        at = f" at lr {lr:g}" if lr is not None else ""
        return ("note: no --adapters given: ConKI w/o external data "
                f"(adapters trained from scratch on the target{at})")

    def plot_representations(self) -> dict[str, str]:
        return dict(PLOT_NAMES)


def single_knowledge_loss(
    loss: HierarchicalContrastiveLoss, pan: list[torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """L_con over the pairs of one knowledge type only (P1, P2, N2 within it): the O_m for
    "w/o C2" (no adapters), the A_m for "w/o C3" (no pan-knowledge); ``pan`` is that block.

    With one knowledge type there is no N1. ``loss`` (built with ``use_n1=False``) is
    evaluated on (pan, pan): each O-block term then appears twice, once as O and once as its
    copy in the A block, and no pair between the two copies counts (they are N1). Per anchor
    this changes nothing; with one denominator per sample every denominator doubles, which adds
    log 2 to each sample that has a positive pair, removed here. The result equals the loss of
    the block alone, with the same gradients.
    """
    if loss.use_n1:
        raise ValueError("one knowledge type has no N1 pairs: build the loss with use_n1=False")
    value = loss(pan, pan, labels)
    if loss.denominator == "anchor":
        return value
    if len(pan) > 1:  # P1 gives every sample a positive
        with_positive = labels.new_tensor(float(labels.shape[0]))
    else:  # only P2: another sample in the same rounded interval
        r = torch.round(labels)
        with_positive = ((r[:, None] == r[None, :]).sum(dim=1) > 1).sum().to(labels.dtype)
    return value - math.log(2.0) * with_positive.to(value.dtype)


class _HiddenStates:
    """``hidden_states[k]`` for the insertion points k, read from text features."""

    def __init__(self, features: dict[str, torch.Tensor], length: int) -> None:
        self.features, self.length = features, length

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.features[f"seq_hidden_{k}"][:, : self.length]
