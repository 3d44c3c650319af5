"""TFR-Net: Transformer-based Feature Reconstruction Network (Yuan et al., ACM MM 2021), as MMSA
runs it (``models/missingTask/TFR_NET``, trained by ``trains/missingTask/TFR_NET.py``).

TFR-Net reads data from which random positions were dropped (MMSA's ``missingTask``: msakit's
run settings ``missing_rate`` and ``missing_seed``, :mod:`msakit.data.missing`, which the
``paper`` preset sets to MMSA's 0.2 per modality and seed 1111) and learns to reconstruct them.

* Inputs: BERT's last hidden states of the token ids with the dropped tokens as [UNK] (BERT is
  trained), audio and vision with the dropped frames zeroed, all at the file's padded lengths.
* Alignment (``CM_ATTN``): dropout on the text states; a temporal convolution per modality (no
  bias, ``padding = (k - 1) // 2``: the lengths stay) to width d, skipped when a modality is
  already d wide. For each modality m: a self-attention encoder on m (``trans_m_mem``, at least
  3 layers) and two crossmodal encoders from m to the others (``trans_m_with_s``, the attention
  dropout of the source), all MulT's fairseq pre-norm encoders with fairseq's sinusoidal
  positions and the future mask; their outputs concatenated: h_m (L_m, B, 3d).
* Reconstruction (training): h_m through ``trans_m_final``, an encoder (at least 3 layers, no
  positions, future mask) whose width is the padded length L_m and whose *sequence* is the
  batch (MMSA permutes h_m to (B, 3d, L_m) and its encoder reads that as (length, batch,
  width)): the samples of a batch attend to the ones before them (the reconstruction loss
  depends on the batch's composition and order; the prediction does not). A Linear layer per
  position back to the input width (768 for text) -> the reconstructed sequence, compared with
  the complete input (text: BERT's states of the complete token ids) on the valid positions
  that were dropped (:func:`msakit.losses.reconstruction.masked_reconstruction_loss`).
* Fusion (``c_gate``), per modality: a bidirectional GRU over the valid positions of h_m (3d
  wide), a convolution (kernel 3) of its outputs -> a sigmoid gate per position, tanh(GRU) x
  gate, concatenated with h_m -> Linear -> tanh, the maximum over *every* padded position,
  dropout. The three vectors concatenated -> BatchNorm -> Linear -> LeakyReLU -> dropout ->
  Linear -> the prediction.
* Loss (MMSA's trainer): L1 on the prediction; from the second epoch on, plus the three
  reconstruction losses weighted by ``reconstruction_weight_{text,audio,vision}`` (MMSA's
  ``weight_gen_loss``).

Readings (docs/readings.md, "TFR-Net"): the batch-wise reconstruction encoders; the steps of
MMSA's training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.encoders.text import bert_inputs
from msakit.losses.reconstruction import RECONSTRUCTION_KINDS, masked_reconstruction_loss
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
from msakit.models.import_weights import rename_mmsa
from msakit.models.mult import _ENCODER_PARTS, CrossmodalEncoder
from msakit.models.registry import ModelSpec, PresetEntry, register_model
from msakit.models.tetfn import PositionalEncoder

MODALITIES = ("text", "audio", "vision")


@dataclass
class TFRNetConfig(ModelConfig, model="tfr_net"):
    """TFR-Net's hyperparameters; defaults: MMSA's config_regression.json ("tfr_net") on MOSI,
    the other data sets' values are the presets at the end of this file. MMSA's names are in
    brackets."""

    dim: int = hp(30, "d: the common width (dst_feature_dim_nheads[0])", low=1)
    heads: int = hp(6, "attention heads of the crossmodal and self-attention encoders, must "
                    "divide d (dst_feature_dim_nheads[1])", low=1)
    layers: int = hp(3, "layers of the crossmodal encoders; the others have max(layers, 3) "
                     "(nlevels)", low=1)
    temporal_heads: int = hp(25, "heads of the reconstruction encoders, whose width is each "
                             "modality's padded length: the largest divisor of the length up "
                             "to this (num_temporal_head, which MMSA requires to divide it)",
                             low=1)
    text_dropout: float = hp(0.2, "dropout on BERT's states (text_dropout)", low=0.0, high=1.0)
    kernel_text: int = hp(1, "text convolution kernel, odd (conv1d_kernel_size_l)", low=1)
    kernel_audio: int = hp(5, "audio convolution kernel, odd (conv1d_kernel_size_a)", low=1)
    kernel_vision: int = hp(3, "vision convolution kernel, odd (conv1d_kernel_size_v)", low=1)
    attn_dropout: float = hp(0.2, "attention dropout towards text, of the self-attention and "
                             "reconstruction encoders (attn_dropout)", low=0.0, high=1.0)
    attn_dropout_audio: float = hp(0.1, "attention dropout towards audio (attn_dropout_a)",
                                   low=0.0, high=1.0)
    attn_dropout_vision: float = hp(0.0, "attention dropout towards vision (attn_dropout_v)",
                                    low=0.0, high=1.0)
    relu_dropout: float = hp(0.2, "dropout after the feed-forward ReLU (relu_dropout)",
                             low=0.0, high=1.0)
    embed_dropout: float = hp(0.2, "dropout on each encoder's inputs (embed_dropout)", low=0.0,
                              high=1.0)
    res_dropout: float = hp(0.2, "dropout on each residual branch (res_dropout)", low=0.0,
                            high=1.0)
    attn_mask: bool = hp(True, "fairseq's future mask in every attention (attn_mask)")
    fusion_text_hidden: int = hp(36, "text GRU width of the fusion (fusion_t_hid)", low=1)
    fusion_audio_hidden: int = hp(20, "audio GRU width of the fusion (fusion_a_hid)", low=1)
    fusion_vision_hidden: int = hp(48, "vision GRU width of the fusion (fusion_v_hid)", low=1)
    fusion_layers: int = hp(3, "layers of each fusion GRU (fusion_gru_layers)", low=1)
    fusion_dropout: float = hp(0.2, "dropout on each modality's fused vector (fusion_drop)",
                               low=0.0, high=1.0)
    head_hidden: int = hp(128, "classifier width (cls_hidden_dim)", low=1)
    head_dropout: float = hp(0.0, "classifier dropout (cls_dropout)", low=0.0, high=1.0)
    reconstruction: bool = hp(True, "reconstruct the dropped positions (MMSA: not "
                              "without_generator)")
    reconstruction_loss: str = hp("combine", "smooth L1 + CMD (combine), smooth_l1, mse or cmd "
                                  "(recloss_type)", choices=RECONSTRUCTION_KINDS)
    reconstruction_weight_text: float = hp(5.0, "weight of the text reconstruction "
                                           "(weight_gen_loss[0])", low=0.0)
    reconstruction_weight_audio: float = hp(2.0, "weight of the audio reconstruction "
                                            "(weight_gen_loss[1])", low=0.0)
    reconstruction_weight_vision: float = hp(20.0, "weight of the vision reconstruction "
                                             "(weight_gen_loss[2])", low=0.0)
    similarity_weight: float = hp(5.0, "weight of CMD in the combined reconstruction loss "
                                  "(weight_sim_loss)", low=0.0)

    def check_combination(self) -> None:
        if self.dim % self.heads:
            raise MsakitError(f"tfr_net: heads ({self.heads}) must divide dim ({self.dim})")
        if self.dim < 4:
            raise MsakitError(f"tfr_net: dim ({self.dim}) must be at least 4 (the sinusoidal "
                              "positions need two frequencies)")
        for m in MODALITIES:
            if getattr(self, f"kernel_{m}") % 2 == 0:
                raise MsakitError(f"tfr_net: kernel_{m} must be odd (the convolution keeps "
                                  "the length)")


def heads_for(length: int, most: int) -> int:
    """The heads of a reconstruction encoder ``length`` wide: the largest divisor of ``length``
    that is at most ``most`` (MMSA's ``num_temporal_head`` where it divides the length, as on
    MOSI and MOSEI; MMSA's code cannot be built otherwise, e.g. on SIMS's 39 / 400 / 55)."""
    return max(d for d in range(1, min(length, most) + 1) if length % d == 0)


class GatedFusion(nn.Module):
    """MMSA's ``C_GATE``: (B, L, D) states and their (B, L) validity -> (B, hidden)."""

    def __init__(self, width: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(width, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.cnn = nn.Conv1d(2 * hidden, 1, kernel_size=3, padding=1)
        self.fc = nn.Linear(2 * hidden + width, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # MMSA's length: the first invalid position (argmin of the mask with a 0 appended); at
        # least 1 (a sample without valid frames reads its first, padded, one).
        lengths = torch.cat([valid, valid.new_zeros(len(valid), 1)], dim=1).argmin(dim=1)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        states = pad_packed_sequence(self.gru(packed)[0], batch_first=True,
                                     total_length=x.size(1))[0]
        gate = torch.sigmoid(self.cnn(states.transpose(1, 2)).transpose(1, 2))
        fused = torch.tanh(self.fc(torch.cat([x, torch.tanh(states) * gate], dim=-1)))
        return self.dropout(fused.max(dim=1)[0])


class TFR_NET(MSAModel):  # noqa: N801 (MMSA's name)
    """TFR-Net on BERT token ids, audio and vision with dropped positions (module docstring)."""

    name = "tfr_net"

    def __init__(self, config: TFRNetConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("tfr_net needs a BERT text encoder")
        c = self.config = config
        self.text_encoder = text_encoder
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        widths = {"text": int(bert.hidden_size), "audio": dims.audio, "vision": dims.vision}
        self.lengths = {"text": dims.text_len, "audio": dims.audio_len, "vision": dims.vision_len}
        self.text_drop = nn.Dropout(c.text_dropout)
        self.proj = nn.ModuleDict({
            m: nn.Conv1d(widths[m], c.dim, getattr(c, f"kernel_{m}"),
                         padding=(getattr(c, f"kernel_{m}") - 1) // 2, bias=False)
            for m in MODALITIES if widths[m] != c.dim
        })
        attn = {"text": c.attn_dropout, "audio": c.attn_dropout_audio,
                "vision": c.attn_dropout_vision}
        deep = max(c.layers, 3)
        self.cross = nn.ModuleDict({
            f"{t}_with_{s}": self._encoder(PositionalEncoder, c.dim, c.heads, c.layers,
                                           attn_dropout=attn[s])
            for t in MODALITIES for s in MODALITIES if s != t
        })
        self.memory = nn.ModuleDict({
            m: self._encoder(PositionalEncoder, c.dim, c.heads, deep, attn_dropout=c.attn_dropout)
            for m in MODALITIES
        })
        if c.reconstruction:
            self.final = nn.ModuleDict({
                m: self._encoder(CrossmodalEncoder, self.lengths[m],
                                 heads_for(self.lengths[m], c.temporal_heads), deep,
                                 attn_dropout=c.attn_dropout)
                for m in MODALITIES
            })
            self.generator = nn.ModuleDict({m: nn.Linear(3 * c.dim, widths[m])
                                            for m in MODALITIES})
            self.loss_parts = tuple(f"reconstruction_{m}" for m in MODALITIES)
        hidden = {"text": c.fusion_text_hidden, "audio": c.fusion_audio_hidden,
                  "vision": c.fusion_vision_hidden}
        self.fusion = nn.ModuleDict({
            m: GatedFusion(3 * c.dim, hidden[m], c.fusion_layers, c.fusion_dropout)
            for m in MODALITIES
        })
        total = sum(hidden.values())
        self.head = nn.Sequential(nn.BatchNorm1d(total), nn.Linear(total, c.head_hidden),
                                  nn.LeakyReLU(), nn.Dropout(c.head_dropout),
                                  nn.Linear(c.head_hidden, 1))
        self.epoch = 0

    def _encoder(self, kind: type[CrossmodalEncoder], dim: int, heads: int, layers: int, *,
                 attn_dropout: float) -> CrossmodalEncoder:
        c = self.config
        return kind(dim, heads, layers, attn_dropout=attn_dropout, relu_dropout=c.relu_dropout,
                    res_dropout=c.res_dropout, embed_dropout=c.embed_dropout,
                    causal=c.attn_mask)

    def reads_padding(self) -> bool:
        return True  # the reconstruction's widths are the padded lengths; the fusion pools all

    def trains_text_encoder(self) -> bool:
        return True  # BERT reads the dropped and the complete token ids: never cached

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch  # the reconstruction joins the loss from the second epoch on

    def _bert(self, text: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(**bert_inputs(text)).last_hidden_state

    def _aligned(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each modality's h_m (L_m, B, 3d): its self-attention and two crossmodal outputs."""
        inputs = {"text": self.text_drop(self._bert(batch.text)), "audio": batch.audio,
                  "vision": batch.vision}
        seqs = {}
        for m, x in inputs.items():
            x = x.transpose(1, 2)
            if m in self.proj:
                x = self.proj[m](x)
            seqs[m] = x.permute(2, 0, 1)
        return {t: torch.cat([self.memory[t](seqs[t]),
                              *(self.cross[f"{t}_with_{s}"](seqs[t], seqs[s])
                                for s in MODALITIES if s != t)], dim=2)
                for t in MODALITIES}

    def forward(self, batch: Batch) -> ModelOutput:
        h = self._aligned(batch)
        valid = self._valid(batch)
        fused = torch.cat([self.fusion[m](h[m].transpose(0, 1), valid[m]) for m in MODALITIES],
                          dim=1)
        output = ModelOutput(self.head(fused).squeeze(-1), {"fusion": fused})
        if self.training and self.config.reconstruction:
            for m in MODALITIES:  # the batch as the sequence: (B, 3d, L) read as (L, B, d)
                if h[m].size(0) != self.lengths[m]:
                    raise MsakitError(
                        f"tfr_net reconstructs {self.lengths[m]} {m} positions (the training "
                        f"file's padded length), the batch has {h[m].size(0)}")
                rebuilt = self.final[m](h[m].permute(1, 2, 0)).permute(0, 2, 1)
                output.terms[f"reconstructed_{m}"] = self.generator[m](rebuilt)
            complete = batch.complete
            output.terms["target_text"] = self._bert(complete.get("text", batch.text))
        return output

    @staticmethod
    def _valid(batch: Batch) -> dict[str, torch.Tensor]:
        """(B, L) float validity of each modality (the text mask, the frames' lengths)."""
        out = {"text": batch.text[:, 1].to(torch.float32)}
        for m in MODALITIES[1:]:
            positions = torch.arange(batch.sequence(m).size(1), device=batch.text.device)
            out[m] = (positions[None, :] < batch.lengths(m)[:, None]).to(torch.float32)
        return out

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        """L1, plus (from the second epoch on) the weighted reconstructions of the dropped
        positions, in training."""
        task = l1_task(output, batch, ctx)
        if "target_text" not in output.terms:
            return LossOutput(task, task)
        c = self.config
        valid = self._valid(batch)
        targets = {"text": output.terms["target_text"],
                   "audio": batch.complete.get("audio", batch.audio),
                   "vision": batch.complete.get("vision", batch.vision)}
        parts = {}
        for m in MODALITIES:
            kept = batch.kept.get(m, valid[m])
            parts[f"reconstruction_{m}"] = masked_reconstruction_loss(
                output.terms[f"reconstructed_{m}"], targets[m], valid[m] - kept,
                kind=c.reconstruction_loss, sim_weight=c.similarity_weight)
        if self.epoch < 1:
            return LossOutput(task, task, parts)
        weighted = sum(getattr(c, f"reconstruction_weight_{m}") * parts[f"reconstruction_{m}"]
                       for m in MODALITIES)
        return LossOutput(task + weighted, task, parts)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {"text": ("text_encoder.",)})


_LETTER = {"l": "text", "a": "audio", "v": "vision"}


def _mmsa_rules() -> list[tuple[str, str | None]]:
    align = r"align_subnet\.Model\."
    rules: list[tuple[str, str | None]] = [
        (r"text_model\.model\.(.+)", r"text_encoder.\1"),
        *((rf"{align}proj_{k}\.weight", f"proj.{m}.weight") for k, m in _LETTER.items()),
        *((rf"generator_{m[0]}\.Model\.linear\.(weight|bias)", rf"generator.{m}.\1")
          for m in MODALITIES),
        *((rf"fusion_subnet\.Model\.{m}_encoder\.gru\.gru\.(.+)", rf"fusion.{m}.gru.\1")
          for m in MODALITIES),
        *((rf"fusion_subnet\.Model\.{m}_encoder\.(cnn|fc)\.(weight|bias)", rf"fusion.{m}.\1.\2")
          for m in MODALITIES),
    ]
    head = r"fusion_subnet\.Model\.classifier\.linear_trans_"
    rules += [(rf"{head}norm\.(.+)", r"head.0.\1"), (rf"{head}hidden\.(weight|bias)", r"head.1.\1"),
              (rf"{head}final\.(weight|bias)", r"head.4.\1")]
    parts = [*_ENCODER_PARTS, (r"embed_positions\._float_tensor", None)]
    for k, m in _LETTER.items():
        encoders = [(f"trans_{k}_mem", f"memory.{m}"), (f"trans_{k}_final", f"final.{m}")]
        encoders += [(f"trans_{k}_with_{s}", f"cross.{m}_with_{_LETTER[s]}")
                     for s in _LETTER if s != k]
        rules += [(rf"{align}{theirs}\.{p}", None if t is None else f"{ours}.{t}")
                  for theirs, ours in encoders for p, t in parts]
    return rules


MMSA_RULES = _mmsa_rules()


def tfr_net_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of MMSA's ``AMIO`` for ``tfr_net`` (or its gradients) as msakit's
    TFR_NET's; raises :class:`MsakitError` naming unknown entries. A projection MMSA keeps but
    skips (a modality already d wide) is dropped; so are the reconstruction encoders and
    generators of weights saved without them (``reconstruction=false``) when msakit's model
    has none: :func:`msakit.models.import_weights.check_mapped` names what does not fit."""
    mapped = rename_mmsa(state, MMSA_RULES, model="TFR_NET")
    for m in MODALITIES:
        weight = mapped.get(f"proj.{m}.weight")
        if weight is not None and weight.shape[0] == weight.shape[1]:
            del mapped[f"proj.{m}.weight"]
    return mapped


def _mmsa_run(batch: int, lr_bert: float, lr_other: float, patience: int, *, encoder: str
              ) -> dict:
    """MMSA's trainer: Adam with L2 weight decay (BERT 1e-4, its biases and LayerNorms 0; the
    rest 1e-3), every gradient entry clipped to 0.8, the learning rates divided by 10 after
    ``patience`` epochs without a lower validation loss, early stop after 6 epochs, no epoch
    limit; its missingTask cadence (``update_epochs`` = 4: gradients zeroed every 4 batches, a
    step after every batch on their running sum and one more after each 4th:
    ``step_each_batch``); MMSA's missing rate 0.2 for every modality, seed 1111 (its
    datasetCommonParams)."""
    return {"text_encoder": encoder, "batch_size": batch, "optimizer": "adam",
            "lr": groups(text=lr_bert, audio=lr_other, vision=lr_other, other=lr_other),
            "weight_decay": groups(text=1e-4, audio=1e-3, vision=1e-3, other=1e-3),
            "schedule": "plateau", "plateau_patience": patience, "warmup": 0.0,
            "clip_value": 0.8, "accumulate": 4, "step_each_batch": True, "early_stop": 6,
            "stop_at_horizon": False,
            "missing_rate": {"text": 0.2, "audio": 0.2, "vision": 0.2}, "missing_seed": 1111}


PRESETS: dict[str, PresetEntry] = {  # MMSA's config_regression.json, "tfr_net"
    "mosi": {"run": _mmsa_run(24, 2e-6, 1e-3, 5, encoder="bert-base-uncased"),
             "model": {}},
    "mosei": {"run": _mmsa_run(24, 1e-5, 2e-3, 5, encoder="bert-base-uncased"),
              "model": {"reconstruction_weight_text": 5e-6, "reconstruction_weight_audio": 2e-6,
                        "reconstruction_weight_vision": 2e-5}},
    "sims": {"run": _mmsa_run(16, 1e-5, 2e-3, 10, encoder="bert-base-chinese"),
             "model": {"layers": 2, "relu_dropout": 0.0, "embed_dropout": 0.1,
                       "head_dropout": 0.1, "reconstruction_weight_text": 1.0,
                       "reconstruction_weight_audio": 0.01,
                       "reconstruction_weight_vision": 1e-4}},
}

_LOW = ("choice", [0.0, 0.1, 0.2])
SEARCH_SPACE = {  # MMSA's config_tune.json ("tfr_net"), but the paired values (d with its heads,
    # the three reconstruction weights), the learning rates (its BERT choices miss MOSI's
    # 2e-6) and batch_size (msakit's sweeps tune settings and hyperparameters)
    "reconstruction_loss": ("choice", ["smooth_l1", "mse", "combine"]),
    **{f"kernel_{m}": ("choice", [1, 3, 5]) for m in MODALITIES},
    "text_dropout": ("choice", [0.1, 0.2, 0.3]),
    "attn_dropout": ("choice", [0.0, 0.1, 0.2, 0.3, 0.4]),
    **{k: _LOW for k in ("attn_dropout_audio", "attn_dropout_vision", "relu_dropout",
                         "embed_dropout", "res_dropout", "head_dropout")},
    "layers": ("choice", [2, 3, 4]),
    **{f"fusion_{m}_hidden": ("choice", [20, 30, 32, 36, 40, 48]) for m in MODALITIES},
    "fusion_layers": ("choice", [1, 2, 3]),
    "fusion_dropout": ("choice", [0.1, 0.2, 0.3]),
    "head_hidden": ("choice", [64, 96, 128]),
}

SPEC = register_model(
    ModelSpec(
        name="tfr_net",
        title="TFR-Net",
        paper="Yuan et al., ACM MM 2021",
        config=TFRNetConfig,
        build=TFR_NET,
        presets=PRESETS,
        search_space=SEARCH_SPACE,
        imports={"mmsa": tfr_net_from_mmsa},
    )
)
