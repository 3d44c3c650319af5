"""MFN: Memory Fusion Network (Zadeh et al., AAAI 2018), as MMSA implements it.

One LSTM cell per modality (the paper's System of LSTMs) steps through the word-aligned
sequences; at each step t the cells' memories of steps t-1 and t, c* = [c_{t-1}; c_t] over the
three modalities, pass the Delta-memory Attention Network (a = softmax(NN_1(c*)),
ĉ = a ⊙ c*), and the Multi-view Gated Memory u takes the update γ1 ⊙ u + γ2 ⊙ tanh(NN_2(ĉ)),
with γ_i = sigmoid(D_γi([ĉ; u])). The prediction is a two-layer network over the last hidden
states and the memory, [h_T; u_T], with no output bound. Loss: L1, Adam with one learning rate
and one weight decay (MMSA's trainer).

Inputs as MMSA gives them (``need_data_aligned``, ``need_model_aligned``, ``need_normalized``):
the text features at every padded position; audio and vision averaged over every padded frame
of the file and that mean repeated at every position (``audio_vision="mean"``, the default:
MMSA's normalisation comes before its alignment, so the audio and vision cells read a constant
input). ``audio_vision="aligned"`` reads the word-aligned sequences instead (an aligned file's
frames, or MMSA's avg_pool alignment of an unaligned file,
:func:`msakit.models.align.mmsa_avg_pool`).
docs/readings.md ("MFN") has the details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config.model_config import ModelConfig, hp
from msakit.models.base import Batch, Dims, L1Regression, ModelOutput, groups_by_prefix
from msakit.models.ef_lstm import aligned_inputs
from msakit.models.import_weights import rename_mmsa
from msakit.models.lf_dnn import mmsa_adam_run
from msakit.models.registry import ModelSpec, register_model
from msakit.models.tfn import text_width

AUDIO_VISION = ("mean", "aligned")
MODALITIES = ("text", "audio", "vision")
BLOCKS = ("att1", "att2", "gamma1", "gamma2", "out")
"""MFN's small networks, MMSA's NN1Config, NN2Config, gamma1Config, gamma2Config, outConfig."""


def two_layers(fc1: nn.Linear, drop: nn.Dropout, fc2: nn.Linear, x: torch.Tensor
               ) -> torch.Tensor:
    """fc2(dropout(relu(fc1(x)))): every small network of MFN and Graph-MFN."""
    return fc2(drop(F.relu(fc1(x))))


State = list[tuple[torch.Tensor, torch.Tensor]]
"""(h, c) of the text, audio and vision LSTM cells."""


def add_cells(net: nn.Module, config: Any, inputs: tuple[int, int, int]) -> None:
    """``net.lstm_text``, ``lstm_audio``, ``lstm_vision``: one LSTM cell per modality,
    ``inputs`` wide, ``config.{text,audio,vision}_hidden`` wide."""
    hidden = (config.text_hidden, config.audio_hidden, config.vision_hidden)
    net.lstm_text, net.lstm_audio, net.lstm_vision = (
        nn.LSTMCell(d_in, h) for d_in, h in zip(inputs, hidden, strict=True))


def add_block(net: nn.Module, name: str, config: Any, *, width: int, out: int) -> None:
    """``net.{name}_fc1``, ``{name}_fc2``, ``{name}_dropout``: a small network ``width`` ->
    ``config.{name}_hidden`` -> ``out`` with dropout ``config.{name}_dropout``."""
    hidden = getattr(config, f"{name}_hidden")
    setattr(net, f"{name}_fc1", nn.Linear(width, hidden))
    setattr(net, f"{name}_fc2", nn.Linear(hidden, out))
    setattr(net, f"{name}_dropout", nn.Dropout(getattr(config, f"{name}_dropout")))


def block(net: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The small network ``name`` of ``net`` (:func:`add_block`) applied to ``x``."""
    return two_layers(getattr(net, f"{name}_fc1"), getattr(net, f"{name}_dropout"),
                      getattr(net, f"{name}_fc2"), x)


def delta_attention(net: nn.Module, previous: State, new: State) -> torch.Tensor:
    """MFN's Delta-memory attention: softmax(NN_1(c*)) ⊙ c*, c* = [c_{t-1}; c_t], NN_1 being
    ``net``'s block ``att1``."""
    c_star = torch.cat([c for _, c in previous] + [c for _, c in new], dim=1)
    return F.softmax(block(net, "att1", c_star), dim=1) * c_star


def gated_memory(net: nn.Module, inputs: tuple[torch.Tensor, ...], memory_size: int,
                 attend: Callable[[State, State], torch.Tensor]) -> tuple[State, torch.Tensor]:
    """MFN's recurrence over the steps of ``inputs`` (text, audio, vision (B, T, d_m)): the
    cells of ``net`` (:func:`add_cells`) step, ``attend(previous, new)`` gives what the memory
    reads, NN_2 (block ``att2``) proposes the update and the gates ``gamma1`` / ``gamma2``
    retain and update. Returns the cells' last (h, c) and the last memory (B, memory_size)."""
    cells = cast("tuple[nn.LSTMCell, ...]",  # add_cells made them
                 (net.lstm_text, net.lstm_audio, net.lstm_vision))
    size = inputs[0].size(0)
    state = [(x.new_zeros(size, cell.hidden_size),) * 2 for x, cell in zip(inputs, cells,
                                                                           strict=True)]
    memory = inputs[0].new_zeros(size, memory_size)
    for t in range(inputs[0].size(1)):
        new = [cell(x[:, t], s) for cell, x, s in zip(cells, inputs, state, strict=True)]
        attended = attend(state, new)
        proposal = torch.tanh(block(net, "att2", attended))
        both = torch.cat([attended, memory], dim=1)
        retain = torch.sigmoid(block(net, "gamma1", both))
        update = torch.sigmoid(block(net, "gamma2", both))
        memory = retain * memory + update * proposal
        state = new
    return state, memory


def step_inputs(batch: Batch, audio_vision: str) -> tuple[torch.Tensor, ...]:
    """Text features, audio and vision at the text's padded length Lt: ``mean``, the time means
    of audio and vision over every frame repeated Lt times (MMSA); ``aligned``, the aligned
    sequences."""
    if audio_vision == "aligned":
        return aligned_inputs(batch)
    text = batch.text_features
    assert text is not None  # a model on precomputed text features gets them in every batch
    length = text.size(1)
    audio = batch.audio.mean(dim=1, keepdim=True).expand(-1, length, -1)
    vision = batch.vision.mean(dim=1, keepdim=True).expand(-1, length, -1)
    return text, audio, vision


@dataclass
class MFNConfig(ModelConfig, model="mfn"):
    """MFN's hyperparameters. Defaults: MMSA's MOSI configuration (config_regression.json);
    the other data sets' values are the presets at the end of this file. MMSA's window size
    is 2 (steps t-1 and t), the only value its code runs with."""

    text_hidden: int = hp(256, "width of the text LSTM cell (MMSA hidden_dims[0])", low=1)
    audio_hidden: int = hp(32, "width of the audio LSTM cell (MMSA hidden_dims[1])", low=1)
    vision_hidden: int = hp(256, "width of the vision LSTM cell (MMSA hidden_dims[2])", low=1)
    memory: int = hp(400, "width of the gated memory u (MMSA memsize)", low=1)
    att1_hidden: int = hp(32, "hidden width of the attention network NN_1 (MMSA NN1Config)",
                          low=1)
    att1_dropout: float = hp(0.2, "dropout in NN_1", low=0.0, high=1.0)
    att2_hidden: int = hp(64, "hidden width of NN_2, which proposes the memory update "
                          "(MMSA NN2Config)", low=1)
    att2_dropout: float = hp(0.0, "dropout in NN_2", low=0.0, high=1.0)
    gamma1_hidden: int = hp(256, "hidden width of the retain gate's network (MMSA "
                            "gamma1Config)", low=1)
    gamma1_dropout: float = hp(0.7, "dropout in the retain gate's network", low=0.0, high=1.0)
    gamma2_hidden: int = hp(32, "hidden width of the update gate's network (MMSA "
                            "gamma2Config)", low=1)
    gamma2_dropout: float = hp(0.5, "dropout in the update gate's network", low=0.0, high=1.0)
    out_hidden: int = hp(128, "hidden width of the output network (MMSA outConfig)", low=1)
    out_dropout: float = hp(0.0, "dropout in the output network", low=0.0, high=1.0)
    audio_vision: str = hp("mean", "mean: every step reads the time means of audio and vision "
                           "(MMSA's need_normalized); aligned: the word-aligned sequences",
                           choices=AUDIO_VISION)


class MemoryFusion(L1Regression):
    """The LSTM cells, the gated memory and the output network that MFN and Graph-MFN share;
    a subclass builds ``attend`` (what the memory reads at each step, ``attended`` wide)."""

    def __init__(self, config, dims: Dims, attended: int, name: str) -> None:
        super().__init__()
        c = self.config = config
        add_cells(self, c, (text_width(dims, name), dims.audio, dims.vision))
        add_block(self, "att2", c, width=attended, out=c.memory)
        for gate in ("gamma1", "gamma2"):
            add_block(self, gate, c, width=attended + c.memory, out=c.memory)
        hidden = c.text_hidden + c.audio_hidden + c.vision_hidden
        add_block(self, "out", c, width=hidden + c.memory, out=1)

    def reads_padding(self) -> bool:
        return True

    def attend(self, previous: State, new: State) -> torch.Tensor:
        """What the memory reads at one step from each modality's (h, c) before and after."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> ModelOutput:
        inputs = step_inputs(batch, self.config.audio_vision)
        state, memory = gated_memory(self, inputs, self.config.memory, self.attend)
        reps = {m: h for m, (h, _) in zip(MODALITIES, state, strict=True)}
        last = torch.cat([*reps.values(), memory], dim=1)
        return ModelOutput(block(self, "out", last).squeeze(1), {**reps, "memory": memory})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {
            "text": ("lstm_text.",), "audio": ("lstm_audio.",), "vision": ("lstm_vision.",)})


class MFN(MemoryFusion):
    """Memory Fusion Network (module docstring)."""

    def __init__(self, config: MFNConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        window = 2 * (config.text_hidden + config.audio_hidden + config.vision_hidden)
        super().__init__(config, dims, window, "MFN")
        add_block(self, "att1", config, width=window, out=window)

    def attend(self, previous: State, new: State) -> torch.Tensor:
        """Delta-memory attention (:func:`delta_attention`)."""
        return delta_attention(self, previous, new)


MMSA_MFN_RULES: list[tuple[str, str | None]] = [
    (r"lstm_l\.(.+)", r"lstm_text.\1"),
    (r"lstm_a\.(.+)", r"lstm_audio.\1"),
    (r"lstm_v\.(.+)", r"lstm_vision.\1"),
    (r"((?:att[12]|gamma[12]|out)_fc[12])\.(weight|bias)", r"\1.\2"),
]


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's MFN state dict (``torch.save(AMIO.state_dict())``) -> msakit's MFN's."""
    return rename_mmsa(state, MMSA_MFN_RULES, model="MFN")


def _mfn(hidden: tuple[int, int, int], memory: int, *blocks: tuple[int, float]) -> dict:
    """MMSA's hidden_dims, memsize and (shapes, drop) of NN1, NN2, gamma1, gamma2, out."""
    model: dict[str, Any] = dict(
        zip(("text_hidden", "audio_hidden", "vision_hidden"), hidden, strict=True))
    model["memory"] = memory
    for name, (shapes, drop) in zip(BLOCKS, blocks, strict=True):
        model[f"{name}_hidden"], model[f"{name}_dropout"] = shapes, drop
    return model


MFN_PRESETS = {  # MMSA's config_regression.json, "mfn" (aligned files on MOSI, MOSEI)
    "mosi": {"run": mmsa_adam_run(128, 2e-3, 0.0), "model": _mfn(
        (256, 32, 256), 400, (32, 0.2), (64, 0.0), (256, 0.7), (32, 0.5), (128, 0.0))},
    "mosei": {"run": mmsa_adam_run(64, 5e-4, 1e-4), "model": _mfn(
        (128, 32, 128), 128, (128, 0.2), (128, 0.5), (256, 0.7), (256, 0.0), (128, 0.5))},
    "sims": {"run": mmsa_adam_run(32, 1e-3, 0.0), "model": _mfn(
        (64, 16, 64), 64, (128, 0.2), (128, 0.0), (64, 0.2), (64, 0.7), (64, 0.7))},
    "simsv2": {"run": mmsa_adam_run(64, 1e-3, 0.0), "model": _mfn(  # the repository's only
        (128, 16, 128), 400, (32, 0.2), (128, 0.5), (32, 0.5), (32, 0.2), (64, 0.2))},
}

TUNE_BLOCKS = {  # MMSA's config_tune.json: every block's shapes and drop
    **{f"{b}_hidden": ("choice", [32, 64, 128, 256]) for b in BLOCKS},
    **{f"{b}_dropout": ("choice", [0.0, 0.2, 0.5, 0.7]) for b in BLOCKS},
}

SPEC = register_model(
    ModelSpec(
        name="mfn",
        title="MFN",
        paper="Zadeh et al., AAAI 2018",
        config=MFNConfig,
        build=MFN,
        presets=MFN_PRESETS,
        search_space={  # MMSA's config_tune.json, "mfn"
            "memory": ("choice", [64, 128, 256, 300, 400]),
            **TUNE_BLOCKS,
            "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
        },
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
