"""TETFN: a text enhanced transformer fusion network (Wang et al., Pattern Recognition 2023).

As thuiar/MMSA's repository implements it (``models/multiTask/TETFN.py``, trained by
``trains/multiTask/TETFN.py``; not in the ``mmsa`` 2.2.1 package). Readings in
docs/readings.md, "TETFN, CENET, ALMT".

* Inputs (MMSA: ``need_data_aligned``, ``need_model_aligned``): BERT's last hidden states of
  the text, and audio/vision frames aligned to the tokens. An aligned file is read as it is; a
  file whose audio/vision have another length is pooled to the text length by the repository's
  ``AlignSubNet("avg_pool")`` (:func:`mmsa_repo_avg_pool`: windows of consecutive frames).
* Text: a temporal convolution (``proj_l``, no bias) to width d. Audio and vision: an LSTM over
  every (padded) frame, then a temporal convolution (no bias) to d; as in MMSA's code both use
  the *audio* kernel (``conv1d_kernel_size_a``; ``conv1d_kernel_size_v`` is never read).
* Crossmodal Transformers as MulT's (:class:`~msakit.models.mult.CrossmodalEncoder`, fairseq's
  pre-norm layers with the future mask), all of 2 layers: text attends to audio and to vision;
  audio to text, and, through the *text enhanced transformer*, to vision (a 1-layer encoder
  from vision to text, then a 2-layer encoder from audio to its output, both with fairseq's
  sinusoidal positions); vision likewise. Each modality's two outputs (2d) pass a 2-layer
  self-attention encoder; its last position is the modality's representation.
* Four heads as Self-MM's (:class:`~msakit.models.self_mm.TaskHead`): fusion on the three
  representations (6d); text, audio and vision each on its convolved sequence's maximum over
  time. Loss and unimodal label generation: Self-MM's (:class:`~msakit.models.self_mm.SelfMM`,
  ``trains/multiTask/TETFN.py`` is the Self-MM trainer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.encoders.text import bert_inputs
from msakit.models.base import Batch, Dims, ModelOutput, MSAModel, groups_by_prefix
from msakit.models.import_weights import rename_mmsa
from msakit.models.mult import _ENCODER_PARTS, CrossmodalEncoder, future_mask
from msakit.models.registry import ModelSpec, register_model
from msakit.models.self_mm import TASKS, SelfMM, TaskHead

MODALITIES = ("text", "audio", "vision")


def mmsa_repo_avg_pool(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, D) -> (B, length, D): the repository's ``AlignSubNet`` in ``avg_pool`` mode.

    Unchanged when T == length. Otherwise the last frame is repeated up to p x length frames
    (p = ceil(T / length)) and output position j is the mean of frames jp .. jp + p - 1
    (``view(B, length, p, D).mean(2)``; the 2.2.1 package strides instead, see
    :func:`msakit.models.bert_mag.mmsa_avg_pool`)."""
    frames = x.size(1)
    if frames == length:
        return x
    pool = -(-frames // length)
    padded = torch.cat([x, x[:, -1:].expand(-1, pool * length - frames, -1)], dim=1)
    return padded.view(x.size(0), length, pool, x.size(2)).mean(dim=2)


def fairseq_positions(x: torch.Tensor) -> torch.Tensor:
    """fairseq's sinusoidal positions (as MMSA's ``SinusoidalPositionalEmbedding``) for a
    (L, B, d) sequence: position i + 1 at step i, the zero vector where the step's first feature
    is exactly 0 (fairseq's padding index 0); sines then cosines, a zero column for odd d."""
    steps, dim = x.size(0), x.size(2)
    half = dim // 2
    rate = math.log(10000) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=x.device) * -rate)
    angle = torch.arange(steps + 1, dtype=torch.float32, device=x.device)[:, None] * freq
    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    if dim % 2:
        table = torch.cat([table, table.new_zeros(steps + 1, 1)], dim=1)
    table[0] = 0
    index = torch.arange(1, steps + 1, device=x.device)[:, None] * (x[..., 0] != 0)
    return table.to(x.dtype)[index]


class PositionalEncoder(CrossmodalEncoder):
    """MulT's encoder with fairseq's positions added to the scaled queries and keys/values
    (MMSA's ``TransformerEncoder(position_embedding=True)``)."""

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        kv = None
        if source is not None:
            s = self.scale * source + fairseq_positions(source)
            kv = (self.embed_drop(s), self.embed_drop(s))
        x = self.embed_drop(self.scale * x + fairseq_positions(x))
        mask = None
        if self.causal:
            mask = future_mask(x.size(0), x.size(0) if kv is None else kv[0].size(0), x.device)
        for layer in self.layers:
            x = layer(x, kv, mask)
        return self.norm(x)


class TextEnhancedTransformer(nn.Module):
    """``lower`` (1 layer): ``query`` attends to the text; ``upper`` (2 layers): ``target``
    attends to that result. Both with positions and the future mask."""

    def __init__(self, dim: int, heads: int, **dropouts: float) -> None:
        super().__init__()
        self.lower = PositionalEncoder(dim, heads, 1, causal=True, **dropouts)
        self.upper = PositionalEncoder(dim, heads, 2, causal=True, **dropouts)

    def forward(self, query: torch.Tensor, target: torch.Tensor, text: torch.Tensor
                ) -> torch.Tensor:
        return self.upper(target, self.lower(query, text))


class ConvolvedLSTM(nn.Module):
    """MMSA's ``AuViSubNet`` here: an LSTM over every frame, a temporal convolution (no bias):
    (B, T, D) -> (B, d, T - k + 1)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, kernel: int, *, layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.conv = nn.Conv1d(hidden, out_dim, kernel_size=kernel, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.rnn(x)[0].transpose(1, 2))


@dataclass
class TETFNConfig(ModelConfig, model="tetfn"):
    """TETFN's hyperparameters; defaults: the repository's config_regression.json ("tetfn") on
    MOSI, the other data sets' values are the presets at the end of this file. MMSA's names are
    in brackets."""

    audio_hidden: int = hp(16, "audio LSTM width (a_lstm_hidden_size)", low=1)
    vision_hidden: int = hp(64, "vision LSTM width (v_lstm_hidden_size)", low=1)
    audio_layers: int = hp(1, "audio LSTM layers (a_lstm_layers)", low=1)
    vision_layers: int = hp(1, "vision LSTM layers (v_lstm_layers)", low=1)
    audio_rnn_dropout: float = hp(0.0, "dropout between audio LSTM layers (a_lstm_dropout)",
                                  low=0.0, high=1.0)
    vision_rnn_dropout: float = hp(0.0, "dropout between vision LSTM layers (v_lstm_dropout)",
                                   low=0.0, high=1.0)
    kernel_text: int = hp(1, "text convolution kernel (conv1d_kernel_size_l)", low=1)
    kernel_audio: int = hp(1, "audio and vision convolution kernel (conv1d_kernel_size_a)",
                           low=1)
    dim: int = hp(50, "d: the common width (dst_feature_dims)", low=1)
    heads: int = hp(5, "attention heads, must divide d (nheads)", low=1)
    attn_dropout: float = hp(0.1, "attention dropout towards text, of the text enhanced and "
                             "memory encoders (attn_dropout)", low=0.0, high=1.0)
    attn_dropout_audio: float = hp(0.0, "attention dropout, text towards audio (attn_dropout_a)",
                                   low=0.0, high=1.0)
    attn_dropout_vision: float = hp(0.1, "attention dropout, text towards vision "
                                    "(attn_dropout_v)", low=0.0, high=1.0)
    relu_dropout: float = hp(0.0, "dropout after the feed-forward ReLU (relu_dropout)",
                             low=0.0, high=1.0)
    embed_dropout: float = hp(0.0, "dropout on each encoder's inputs (embed_dropout)",
                              low=0.0, high=1.0)
    res_dropout: float = hp(0.1, "dropout on each residual branch (res_dropout)", low=0.0,
                            high=1.0)
    fusion_dim: int = hp(64, "fusion head width (post_fusion_dim)", low=1)
    text_dim: int = hp(32, "text head width (post_text_dim)", low=1)
    audio_dim: int = hp(32, "audio head width (post_audio_dim)", low=1)
    vision_dim: int = hp(16, "vision head width (post_video_dim)", low=1)
    fusion_dropout: float = hp(0.0, "fusion head input dropout (post_fusion_dropout)",
                               low=0.0, high=1.0)
    text_dropout: float = hp(0.0, "text head input dropout (post_text_dropout)", low=0.0,
                             high=1.0)
    audio_dropout: float = hp(0.0, "audio head input dropout (post_audio_dropout)", low=0.0,
                              high=1.0)
    vision_dropout: float = hp(0.0, "vision head input dropout (post_video_dropout)", low=0.0,
                               high=1.0)
    label_bound: float = hp(3.0, "H: generated labels are clipped to [-H, H] (H)", low=0.0)
    exclude_zero: bool = hp(True, "positive centres average labels > 0, not >= 0 (excludeZero)")

    def check_combination(self) -> None:
        if self.dim % self.heads:
            raise MsakitError(f"tetfn: heads ({self.heads}) must divide dim ({self.dim})")
        if self.dim < 4:
            raise MsakitError(f"tetfn: dim ({self.dim}) must be at least 4 (the sinusoidal "
                              "positions need two frequencies)")


class TETFN(SelfMM):
    """TETFN on BERT text and audio/vision frames aligned to the tokens; Self-MM's loss and
    unimodal label generation (inherited)."""

    name = "tetfn"
    # Self-MM's inherited code reads the settings the two configs share
    config: TETFNConfig  # type: ignore[assignment]

    def __init__(self, config: TETFNConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        MSAModel.__init__(self)
        if text_encoder is None:
            raise MsakitError("tetfn needs a BERT text encoder")
        c = self.config = config
        self.text_encoder = text_encoder
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        width: int = bert.hidden_size
        self.proj_text = nn.Conv1d(width, c.dim, kernel_size=c.kernel_text, bias=False)
        self.audio_net = ConvolvedLSTM(dims.audio, c.audio_hidden, c.dim, c.kernel_audio,
                                       layers=c.audio_layers, dropout=c.audio_rnn_dropout)
        self.vision_net = ConvolvedLSTM(dims.vision, c.vision_hidden, c.dim, c.kernel_audio,
                                        layers=c.vision_layers, dropout=c.vision_rnn_dropout)
        drop = {"relu_dropout": c.relu_dropout, "res_dropout": c.res_dropout,
                "embed_dropout": c.embed_dropout}
        attn = {"text": c.attn_dropout, "audio": c.attn_dropout_audio,
                "vision": c.attn_dropout_vision}
        self.cross = nn.ModuleDict({
            f"{t}_with_text": CrossmodalEncoder(c.dim, c.heads, 2, attn_dropout=c.attn_dropout,
                                                causal=True, **drop)
            for t in ("audio", "vision")
        })
        for s in ("audio", "vision"):
            self.cross[f"text_with_{s}"] = CrossmodalEncoder(
                c.dim, c.heads, 2, attn_dropout=attn[s], causal=True, **drop)
        self.enhanced = nn.ModuleDict({
            f"{t}_with_{s}": TextEnhancedTransformer(c.dim, c.heads, attn_dropout=c.attn_dropout,
                                                     **drop)
            for t, s in (("audio", "vision"), ("vision", "audio"))
        })
        self.memory = nn.ModuleDict({
            m: CrossmodalEncoder(2 * c.dim, c.heads, 2, attn_dropout=c.attn_dropout, causal=True,
                                 **drop)
            for m in MODALITIES
        })
        self.heads = nn.ModuleDict({
            "fusion": TaskHead(6 * c.dim, c.fusion_dim, c.fusion_dropout),
            "text": TaskHead(c.dim, c.text_dim, c.text_dropout),
            "audio": TaskHead(c.dim, c.audio_dim, c.audio_dropout),
            "vision": TaskHead(c.dim, c.vision_dim, c.vision_dropout),
        })
        self.unimodal_labels = None
        self.epoch = 1

    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """text (B, 3, Lt) -> {"seq_hidden": BERT's last hidden states (B, Lt, d_t)}."""
        return {"seq_hidden": self.text_encoder(**bert_inputs(text)).last_hidden_state}

    def reads_padding(self) -> bool:
        return True  # every padded frame enters the LSTMs and the last position is read

    def _sequences(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each modality convolved to width d, as (L', B, d)."""
        hidden = self.cached_text_features(batch)["seq_hidden"]
        length = batch.text.size(2)
        seqs = {
            "text": self.proj_text(hidden.transpose(1, 2)),
            "audio": self.audio_net(mmsa_repo_avg_pool(batch.audio, length)),
            "vision": self.vision_net(mmsa_repo_avg_pool(batch.vision, length)),
        }
        return {m: x.permute(2, 0, 1) for m, x in seqs.items()}

    def forward(self, batch: Batch) -> ModelOutput:
        s = self._sequences(batch)
        pairs = {
            "text": (self.cross["text_with_audio"](s["text"], s["audio"]),
                     self.cross["text_with_vision"](s["text"], s["vision"])),
            "audio": (self.cross["audio_with_text"](s["audio"], s["text"]),
                      self.enhanced["audio_with_vision"](s["vision"], s["audio"], s["text"])),
            "vision": (self.cross["vision_with_text"](s["vision"], s["text"]),
                       self.enhanced["vision_with_audio"](s["audio"], s["vision"], s["text"])),
        }
        last = [self.memory[m](torch.cat(pairs[m], dim=2))[-1] for m in MODALITIES]
        inputs = {"fusion": torch.cat(last, dim=-1)}
        inputs.update({m: s[m].max(dim=0)[0] for m in MODALITIES})
        reps: dict[str, torch.Tensor] = {}
        for task in TASKS:
            prediction, feature = self.heads[task](inputs[task])
            reps[f"feature_{task}"] = feature
            reps[f"prediction_{task}"] = prediction.unsqueeze(-1)
        return ModelOutput(prediction=reps["prediction_fusion"].squeeze(-1),
                           representations=reps)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(
            self, {"text": ("text_encoder.",), "audio": ("audio_net.",), "vision": ("vision_net.",)}
        )


def _mmsa_rules() -> list[tuple[str, str | None]]:
    letter = {"l": "text", "a": "audio", "v": "vision"}
    rules: list[tuple[str, str | None]] = [
        (r"text_model\.model\.(.+)", r"text_encoder.\1"),
        (r"audio_model\.(rnn\..+|conv\.weight)", r"audio_net.\1"),
        (r"video_model\.(rnn\..+|conv\.weight)", r"vision_net.\1"),
        (r"proj_l\.weight", "proj_text.weight"),
    ]
    parts = [*_ENCODER_PARTS, (r"embed_positions\._float_tensor", None)]

    def encoder(source: str, target: str) -> list[tuple[str, str | None]]:
        return [(rf"{source}\.{p}", None if t is None else f"{target}.{t}") for p, t in parts]

    for t, s in (("l", "a"), ("l", "v"), ("a", "l"), ("v", "l")):
        rules += encoder(f"trans_{t}_with_{s}", f"cross.{letter[t]}_with_{letter[s]}")
    for t, s in (("a", "v"), ("v", "a")):
        for half, ours in (("lower_mha", "lower"), ("upper_mha", "upper")):
            rules += encoder(f"trans_{t}_with_{s}\\.{half}",
                             f"enhanced.{letter[t]}_with_{letter[s]}.{ours}")
    for m in "lav":
        rules += encoder(f"trans_{m}_mem", f"memory.{letter[m]}")
    heads = {"fusion": "fusion", "text": "text", "audio": "audio", "video": "vision"}
    rules += [(rf"post_{theirs}_layer_([123])\.(weight|bias)", rf"heads.{ours}.fc\1.\2")
              for theirs, ours in heads.items()]
    return rules


MMSA_RULES = _mmsa_rules()


def tetfn_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the repository's ``AMIO`` for ``tetfn`` (or its gradients) as msakit's
    TETFN's; raises :class:`MsakitError` naming unknown entries."""
    return rename_mmsa(state, MMSA_RULES, model="TETFN")


# The repository's config_regression.json ("tetfn") and trainer (Self-MM's): Adam with L2 weight
# decay per group (BERT biases and LayerNorms without), update_epochs = 4, constant learning
# rates, early stop after 8 epochs, no epoch limit.
_LOOP = {"optimizer": "adam", "accumulate": 4, "schedule": "constant", "warmup": 0.0,
         "early_stop": 8, "stop_at_horizon": False}


def _run(batch: int, encoder: str, lr: tuple[float, float, float, float],
         decay: tuple[float, float, float, float]) -> dict:
    return {**_LOOP, "text_encoder": encoder, "batch_size": batch,
            "lr": groups(text=lr[0], audio=lr[1], vision=lr[2], other=lr[3]),
            "weight_decay": groups(text=decay[0], audio=decay[1], vision=decay[2],
                                   other=decay[3])}


_EN, _ZH = "bert-base-uncased", "bert-base-chinese"
PRESETS = {
    "mosi": {"run": _run(64, _EN, (3e-5, 5e-4, 3e-4, 3e-4), (1e-3, 1e-2, 0.0, 1e-2)),
             "model": {}},
    "mosei": {"run": _run(32, _EN, (3e-5, 1e-3, 5e-3, 1e-4), (1e-3, 0.0, 1e-3, 1e-2)),
              "model": {"audio_hidden": 32, "vision_hidden": 32, "relu_dropout": 0.1,
                        "embed_dropout": 0.1, "res_dropout": 0.0, "text_dim": 64,
                        "text_dropout": 0.1, "vision_dropout": 0.1}},
    "sims": {"run": _run(64, _ZH, (3e-5, 3e-3, 5e-4, 3e-3), (1e-3, 0.0, 1e-2, 1e-3)),
             "model": {"kernel_text": 3, "kernel_audio": 5, "attn_dropout": 0.0,
                       "attn_dropout_audio": 0.1, "attn_dropout_vision": 0.0,
                       "relu_dropout": 0.1, "res_dropout": 0.0, "fusion_dropout": 0.1,
                       "text_dim": 64, "audio_dim": 16, "vision_dim": 32}},
    "simsv2": {"run": _run(64, _ZH, (5e-6, 5e-4, 5e-3, 3e-4), (1e-3, 1e-3, 1e-3, 1e-3)),
               "model": {"vision_hidden": 32, "kernel_text": 5, "kernel_audio": 3,
                         "fusion_dim": 128, "fusion_dropout": 0.1, "text_dim": 64,
                         "text_dropout": 0.1, "audio_dim": 16, "vision_dim": 32}},
}

_RATES = [1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3]
_DROP = ("choice", [0.0, 0.1])
SEARCH_SPACE = {  # the repository's config_tune.json ("tetfn"), but batch_size (msakit's
    # sweeps tune settings and hyperparameters) and conv1d_kernel_size_v (never read)
    "lr.text": ("choice", [5e-6, 1e-5, 3e-5, 5e-5]),
    "lr.audio": ("choice", _RATES), "lr.vision": ("choice", _RATES),
    "lr.other": ("choice", _RATES),
    "weight_decay.text": ("choice", [1e-3, 1e-2]),
    "weight_decay.audio": ("choice", [0.0, 1e-3, 1e-2]),
    "weight_decay.vision": ("choice", [0.0, 1e-3, 1e-2]),
    "weight_decay.other": ("choice", [1e-3, 1e-2]),
    "audio_hidden": ("choice", [16, 32]), "vision_hidden": ("choice", [32, 64]),
    "fusion_dim": ("choice", [64, 128]), "text_dim": ("choice", [32, 64]),
    "audio_dim": ("choice", [16, 32]), "vision_dim": ("choice", [16, 32]),
    "kernel_text": ("choice", [1, 3, 5]), "kernel_audio": ("choice", [1, 3, 5]),
    **{k: _DROP for k in ("fusion_dropout", "text_dropout", "audio_dropout", "vision_dropout",
                          "attn_dropout", "attn_dropout_audio", "attn_dropout_vision",
                          "relu_dropout", "embed_dropout", "res_dropout")},
}

SPEC = register_model(
    ModelSpec(
        name="tetfn",
        title="TETFN",
        paper="Wang et al., Pattern Recognition 2023",
        config=TETFNConfig,
        build=TETFN,
        presets=PRESETS,
        search_space=SEARCH_SPACE,
        imports={"mmsa": tetfn_from_mmsa},
    )
)
