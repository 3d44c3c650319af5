"""MCTN: Multimodal Cyclic Translation Network (Pham et al., AAAI 2019), as MMSA implements it.

thuiar/MMSA ``models/singleTask/MCTN.py``, trained by ``trains/singleTask/MCTN.py``; MMSA has a
configuration for MOSI only (aligned file, the precomputed text features); msakit's MOSEI and
SIMS presets take MOSI's values (SIMS: ``max_seq_len`` 39, its text length).

* Inputs: text, audio and vision cut to the first ``max_seq_len`` steps; audio and vision are
  zero-padded in the feature dimension to the widest modality's width W (the text's, 768, on
  MMSA's files), so every translation maps W-wide sequences to W-wide sequences.
* Cyclic translation (seq2seq 1, one set of weights used twice): text -> vision, then the
  vision it produced -> text. Seq2seq 2 translates seq2seq 1's encoder states (the joint
  representation) -> audio. Each seq2seq is a bidirectional LSTM encoder (forward and backward
  states summed; its query s = tanh(W (h_fwd + h_bwd))) and an attention decoder that steps
  with teacher forcing (MMSA's both branches feed the target), each step a fresh bidirectional
  LSTM over one input [target_{t-1}; context], the output Linear([h; context]); the first
  output step stays zero.
* Prediction: an LSTM over seq2seq 2's encoder states, attention pooling (softmax of
  tanh(Linear)) over the time steps, a Linear layer.
* Loss: L1(prediction) + 0.1 (MSE(vision', vision) + MSE(text', text) + MSE(audio', audio))
  (``translation_weight``), over every padded feature and step, as MMSA computes it.

``sequence_axis``: MMSA's code hands its batch-first tensors to sequence-first LSTMs, so its
recurrences (encoders, decoders, the prediction LSTM) run across the *samples of the batch*
and each step holds one sample's T positions; a sample's prediction depends on the other
samples of its batch. ``batch`` (the default) computes exactly that; ``time`` runs them over
each sample's time steps, the paper's model (docs/readings.md, "BERT-MAG, MFM, MCTN"). Where
the modalities have different numbers of steps (an unaligned file), MMSA's code fails; msakit
pads the shorter ones with zero steps under ``batch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
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
from msakit.models.registry import ModelSpec, PresetEntry, register_model
from msakit.models.tfn import text_width

SEQUENCE_AXES = ("batch", "time")


@dataclass
class MCTNConfig(ModelConfig, model="mctn"):
    """MCTN's hyperparameters: MMSA's config_regression.json ("mctn", MOSI)."""

    hidden: int = hp(32, "width of every LSTM and attention layer (MMSA hid_dim)", low=1)
    max_seq_len: int = hp(50, "steps of each modality read (MMSA max_seq_len)", low=1)
    translation_weight: float = hp(0.1, "weight of each of the three translation MSEs "
                                   "(MMSA: 0.1, in its code)", low=0.0)
    sequence_axis: str = hp("batch", "what the recurrences run over: batch (MMSA's code: the "
                            "batch's samples) or time (each sample's steps, the paper)",
                            choices=SEQUENCE_AXES)


class Encoder(nn.Module):
    """Bidirectional LSTM: (S, N, d) -> states (S, N, h) (both directions summed) and the
    decoder's first query s = tanh(W (h_fwd + h_bwd)) (N, h)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.rnn = nn.LSTM(dim, hidden, bidirectional=True)
        self.fc = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, (h, _) = self.rnn(x)
        states = out[..., :self.hidden] + out[..., self.hidden:]
        return states, torch.tanh(self.fc(h[-1] + h[-2]))


class Attention(nn.Module):
    """Additive attention of a query s (N, h) over encoder states (S, N, h) -> weights (N, S)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.attn = nn.Linear(2 * hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, 1, bias=False)

    def forward(self, s: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        keys = states.transpose(0, 1)  # (N, S, h)
        query = s.unsqueeze(1).expand(-1, keys.size(1), -1)
        energy = torch.tanh(self.attn(torch.cat((query, keys), dim=2)))
        return F.softmax(self.v(energy).squeeze(2), dim=1)


class Decoder(nn.Module):
    """One decoding step: [input; context] through a fresh bidirectional LSTM (one step, zero
    state); the output Linear([h_fwd + h_bwd; context]) and the next query h_fwd + h_bwd."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.attention = Attention(hidden)
        self.rnn = nn.LSTM(dim + hidden, hidden, bidirectional=True)
        self.fc_out = nn.Linear(2 * hidden, dim)

    def forward(self, x: torch.Tensor, s: torch.Tensor, states: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.attention(s, states).unsqueeze(1)  # (N, 1, S)
        context = torch.bmm(weights, states.transpose(0, 1)).squeeze(1)  # (N, h)
        out, (h, _) = self.rnn(torch.cat((x, context), dim=1).unsqueeze(0))
        out = out[0, :, :self.hidden] + out[0, :, self.hidden:]
        return self.fc_out(torch.cat((out, context), dim=1)), h[-1] + h[-2]


class Seq2Seq(nn.Module):
    """Encoder and teacher-forced attention decoder: (source, target) (S, N, d) -> (encoder
    states (S, N, h), translation (S, N, d_target) whose first step is zero)."""

    def __init__(self, dim: int, target_dim: int, hidden: int) -> None:
        super().__init__()
        self.encoder = Encoder(dim, hidden)
        self.decoder = Decoder(target_dim, hidden)

    def forward(self, source: torch.Tensor, target: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        states, s = self.encoder(source)
        outputs = [target.new_zeros(target.shape[1:])]
        for t in range(1, target.size(0)):
            step, s = self.decoder(target[t - 1], s, states)
            outputs.append(step)
        return states, torch.stack(outputs)


class Regression(nn.Module):
    """An LSTM over the joint states, attention pooling over the time steps, a Linear layer."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(hidden, hidden)
        self.score = nn.Linear(hidden, 1)
        self.out = nn.Linear(hidden, 1)

    def forward(self, states: torch.Tensor, batch_major: bool) -> torch.Tensor:
        """states (S, N, h) -> (B,): S is the batch (``batch_major``, MMSA) or time."""
        activations, _ = self.rnn(states)
        if not batch_major:
            activations = activations.transpose(0, 1)  # (B, T, h)
        weights = F.softmax(torch.tanh(self.score(activations)).squeeze(2), dim=1)
        return self.out((activations * weights.unsqueeze(2)).sum(1)).squeeze(1)


class MCTN(MSAModel):
    """Multimodal Cyclic Translation Network (module docstring)."""

    name = "mctn"
    loss_parts = ("translation",)
    """The three translations' MSEs summed, before ``translation_weight``; each a mean over the
    rank's own samples."""

    def __init__(self, config: MCTNConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__()
        self.config = config
        text = text_width(dims, "MCTN")
        self.width = max(text, dims.audio, dims.vision)
        self.cycle = Seq2Seq(self.width, self.width, config.hidden)  # text <-> vision
        self.to_audio = Seq2Seq(config.hidden, self.width, config.hidden)
        self.head = Regression(config.hidden)

    def reads_padding(self) -> bool:
        return True  # every padded step up to max_seq_len is translated

    def start_message(self, *, with_adapters: bool = False) -> str | None:
        if self.config.sequence_axis == "batch":
            return ("note: mctn runs its recurrences across the samples of each batch, as "
                    "MMSA's code does: a prediction depends on its batch (--set "
                    "sequence_axis=time: over each sample's steps)")
        return None

    def _inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The three modalities (S, N, W): the first max_seq_len steps, widths padded to W.

        ``batch`` axis: the steps are the N axis, which every modality must share; MMSA's code
        fails unless they have as many, msakit pads the shorter ones with zero steps."""
        text = batch.text_features
        assert text is not None  # a model on precomputed text features gets them in every batch
        full = {"text": text, "audio": batch.audio, "vision": batch.vision}
        x = {k: v[:, :self.config.max_seq_len] for k, v in full.items()}
        if self.config.sequence_axis == "time":
            return {k: F.pad(v, (0, self.width - v.size(2))).transpose(0, 1)
                    for k, v in x.items()}
        steps = max(v.size(1) for v in x.values())
        return {k: F.pad(v, (0, self.width - v.size(2), 0, steps - v.size(1)))
                for k, v in x.items()}

    def forward(self, batch: Batch) -> ModelOutput:
        x = self._inputs(batch)
        joint, vision = self.cycle(x["text"], x["vision"])
        _, text = self.cycle(vision, x["text"])
        joint, audio = self.to_audio(joint, x["audio"])
        prediction = self.head(joint, self.config.sequence_axis == "batch")
        terms = {"vision": (vision, x["vision"]), "text": (text, x["text"]),
                 "audio": (audio, x["audio"])}
        return ModelOutput(prediction, {}, {f"{k}_{part}": v for k, pair in terms.items()
                                            for part, v in zip(("hat", "true"), pair,
                                                               strict=True)})

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        """L1 + translation_weight x (the three translations' MSEs), MMSA's ``loss_all``."""
        task = l1_task(output, batch, ctx)
        t = output.terms
        errors = cast(torch.Tensor, sum(  # of three tensors
            F.mse_loss(t[f"{m}_hat"], t[f"{m}_true"]) for m in ("vision", "text", "audio")))
        translation = self.config.translation_weight * errors
        return LossOutput(task + translation, task, {"translation": errors})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {})


MMSA_ALIASES = (("seq2seq1.encoder.", "encoder1."), ("seq2seq1.decoder.", "decoder1."),
                ("seq2seq2.encoder.", "encoder2."), ("seq2seq2.decoder.", "decoder2."),
                ("decoder1.attention.", "attn1."), ("decoder2.attention.", "attn2."))
"""MMSA registers its modules twice (``Seq2Seq`` holds the encoder and decoder that ``MCTN``
also holds, the decoder holds the attention): its state dict lists each tensor under several
names, its ``named_parameters`` (gradients) under the first. Alias prefix -> that name."""
_PARTS = {"1": "cycle", "2": "to_audio"}
MMSA_RULES: list[tuple[str, str | None]] = [
    *((rf"encoder{k}\.(rnn\..+|fc\.weight)", rf"{v}.encoder.\1") for k, v in _PARTS.items()),
    *((rf"decoder{k}\.(rnn\..+|fc_out\..+)", rf"{v}.decoder.\1") for k, v in _PARTS.items()),
    *((rf"attn{k}\.(attn|v)\.weight", rf"{v}.decoder.attention.\1.weight")
      for k, v in _PARTS.items()),
    (r"regression\.rnn\.(.+)", r"head.rnn.\1"),
    (r"regression\.linear\.(weight|bias)", r"head.score.\1"),
    (r"regression\.linear2\.(weight|bias)", r"head.out.\1"),
]


def _canonical(key: str) -> str:
    """MMSA's first name of an aliased entry (``Model.seq2seq1.decoder.attention.v.weight`` ->
    ``Model.attn1.v.weight``)."""
    prefix = "Model."
    short = key[len(prefix):] if key.startswith(prefix) else key
    for alias, name in MMSA_ALIASES:
        if short.startswith(alias):
            short = name + short[len(alias):]
    return prefix + short if key.startswith(prefix) else short


def mctn_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's MCTN state dict (``torch.save(AMIO.state_dict())``, or its gradients by
    ``named_parameters``) -> msakit's MCTN's. Aliases of one tensor must hold equal values."""
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _canonical(key)
        if name in merged and not torch.equal(merged[name], value):
            raise MsakitError(f"not MMSA's MCTN weights: {key} and {name} are one module of "
                              "MMSA's model but hold different values")
        merged.setdefault(name, value)
    return rename_mmsa(merged, MMSA_RULES, model="MCTN")


MMSA_RUN = {  # MMSA's trainer: Adam at init_lr, global-norm clipping, batch 32
    "text_encoder": None, "batch_size": 32,
    "lr": groups(text=1e-4, audio=1e-4, vision=1e-4, other=1e-4),
    "weight_decay": groups(text=0.0, audio=0.0, vision=0.0, other=0.0),
    "optimizer": "adam", "grad_clip": 1.0,
    "schedule": "constant", "warmup": 0.0, "early_stop": 8, "stop_at_horizon": False,
}

PRESETS: dict[str, PresetEntry] = {
    "mosi": {"run": MMSA_RUN, "model": {}},  # MMSA's config_regression.json, "mctn"
    # MMSA configures MOSI only: msakit's completion, MOSI's values (SIMS: the text's 39 steps,
    # so that every modality has as many steps; docs/readings.md).
    "mosei": {"run": MMSA_RUN, "model": {}},
    "sims": {"run": MMSA_RUN, "model": {"max_seq_len": 39}},
}

SPEC = register_model(
    ModelSpec(
        name="mctn",
        title="MCTN",
        paper="Pham et al., AAAI 2019",
        config=MCTNConfig,
        build=MCTN,
        presets=PRESETS,
        search_space={"lr": ("float", 1e-5, 1e-3, True),
                      "hidden": ("choice", [16, 32, 64, 128])},
        text_input="features",
        imports={"mmsa": mctn_from_mmsa},
    )
)
