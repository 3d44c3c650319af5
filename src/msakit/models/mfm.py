"""MFM: Multimodal Factorization Model (Tsai et al., ICLR 2019), as MMSA implements it.

thuiar/MMSA ``models/singleTask/MFM.py``, trained by ``trains/singleTask/MFM.py``. Inputs: the
file's precomputed text features and the audio and vision sequences at the text's padded
length T (MMSA's ``need_data_aligned``: an aligned file as it is; SIMS, which has no aligned
file, pooled by MMSA's AlignSubNet, :func:`msakit.models.align.mmsa_avg_pool`). Every
padded position is read, as MMSA reads it.

* Modality-specific codes z_m (m = text, audio, vision): an LSTM over the T steps, its last
  hidden state through a Linear layer.
* The multimodal discriminative code z_y: a Memory Fusion Network over the three sequences
  (:class:`MemoryFusionEncoder`: one LSTM cell per modality, the delta-memory attention over
  [c_{t-1}; c_t], the gated memory), its last [h_t; h_a; h_v; memory] through a Linear layer.
* Factors f = ReLU(fc2(dropout(ReLU(fc1(z))))) for y and each modality; the prediction is
  fc2(dropout(ReLU(fc1(f_y)))), unbounded.
* Generation: for each modality an LSTM cell decodes [f_y; f_m] into T steps (its first input
  [f_y; f_m], then its own previous hidden state), each step through a Linear layer: x̂_m.
* Loss (MMSA's trainer): L1(prediction) + sum_m lambda_m MSE(x̂_m, x_m) + lambda_mmd
  (MMD(z_t) + MMD(z_a) + MMD(z_v) + MMD(z_y)), each MMD against a fresh standard-normal
  sample (:mod:`msakit.losses.mfm`). Evaluation's loss is the L1 term alone, as MMSA's.

MMSA's trainer builds Adam without its configuration's ``learning_rate``: every MFM run of MMSA
trains at Adam's default 1e-3 with the configured weight decay; the presets do the same
(docs/readings.md, "BERT-MAG, MFM, MCTN").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.losses.mfm import mmd_to_normal
from msakit.models.align import mmsa_avg_pool
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
from msakit.models.mfn import State, add_block, add_cells, delta_attention, gated_memory, two_layers
from msakit.models.registry import ModelSpec, register_model
from msakit.models.tfn import text_width

MODALITIES = ("text", "audio", "vision")
_SHORT = {"text": "l", "audio": "a", "vision": "v"}
"""MMSA's letter for each modality (l: language)."""


@dataclass
class MFMConfig(ModelConfig, model="mfm"):
    """MFM's hyperparameters; defaults: MMSA's config_regression.json ("mfm") on MOSI, the
    other data sets' values are the presets at the end of this file. MMSA's window size is 2
    (steps t-1 and t), the only value its code runs with; its ``outConfig`` sizes an output
    layer of the inner MFN that MFM never reads, so it is not here."""

    text_hidden: int = hp(128, "MFN's text LSTM cell (MMSA hidden_dims[0])", low=1)
    audio_hidden: int = hp(32, "MFN's audio LSTM cell (MMSA hidden_dims[1])", low=1)
    vision_hidden: int = hp(128, "MFN's vision LSTM cell (MMSA hidden_dims[2])", low=1)
    memory: int = hp(64, "width of MFN's gated memory (MMSA memsize)", low=1)
    att1_hidden: int = hp(32, "hidden width of MFN's attention network NN_1", low=1)
    att1_dropout: float = hp(0.7, "dropout in NN_1", low=0.0, high=1.0)
    att2_hidden: int = hp(64, "hidden width of MFN's NN_2 (the memory update)", low=1)
    att2_dropout: float = hp(0.0, "dropout in NN_2", low=0.0, high=1.0)
    gamma1_hidden: int = hp(32, "hidden width of MFN's retain gate network", low=1)
    gamma1_dropout: float = hp(0.0, "dropout in the retain gate network", low=0.0, high=1.0)
    gamma2_hidden: int = hp(64, "hidden width of MFN's update gate network", low=1)
    gamma2_dropout: float = hp(0.5, "dropout in the update gate network", low=0.0, high=1.0)
    zy_size: int = hp(80, "width of the multimodal discriminative code z_y", low=1)
    zl_size: int = hp(64, "width of the text code z_t (MMSA zl_size)", low=1)
    za_size: int = hp(80, "width of the audio code z_a", low=1)
    zv_size: int = hp(80, "width of the vision code z_v", low=1)
    fy_size: int = hp(64, "width of the discriminative factor f_y", low=1)
    fl_size: int = hp(32, "width of the text factor f_t (MMSA fl_size)", low=1)
    fa_size: int = hp(16, "width of the audio factor f_a", low=1)
    fv_size: int = hp(64, "width of the vision factor f_v", low=1)
    zy_to_fy_dropout: float = hp(0.5, "dropout between z_y and f_y", low=0.0, high=1.0)
    zl_to_fl_dropout: float = hp(0.5, "dropout between z_t and f_t", low=0.0, high=1.0)
    za_to_fa_dropout: float = hp(0.7, "dropout between z_a and f_a", low=0.0, high=1.0)
    zv_to_fv_dropout: float = hp(0.5, "dropout between z_v and f_v", low=0.0, high=1.0)
    fy_to_y_dropout: float = hp(0.0, "dropout in the prediction head", low=0.0, high=1.0)
    mmd_weight: float = hp(100.0, "lambda_mmd: weight of the four MMD terms (MMSA lda_mmd)",
                           low=0.0)
    text_recon_weight: float = hp(0.5, "weight of the text reconstruction MSE (MMSA lda_xl)",
                                  low=0.0)
    audio_recon_weight: float = hp(0.01, "weight of the audio reconstruction MSE (lda_xa)",
                                   low=0.0)
    vision_recon_weight: float = hp(0.5, "weight of the vision reconstruction MSE (lda_xv)",
                                    low=0.0)


class MemoryFusionEncoder(nn.Module):
    """MMSA's MFN up to its last state [h_t; h_a; h_v; memory] (B, sum(hidden) + memory): the
    cells, blocks and recurrence of msakit's MFN (:func:`msakit.models.mfn.gated_memory` with
    its delta-memory attention), under the same names, without MFN's output network."""

    def __init__(self, c: MFMConfig, inputs: tuple[int, int, int]) -> None:
        super().__init__()
        add_cells(self, c, inputs)
        hidden = c.text_hidden + c.audio_hidden + c.vision_hidden
        window = 2 * hidden
        self.memory = c.memory
        self.out_size = hidden + c.memory
        add_block(self, "att1", c, width=window, out=window)
        add_block(self, "att2", c, width=window, out=c.memory)
        for gate in ("gamma1", "gamma2"):
            add_block(self, gate, c, width=window + c.memory, out=c.memory)

    def attend(self, previous: State, new: State) -> torch.Tensor:
        return delta_attention(self, previous, new)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """inputs: text, audio, vision (B, T, d_m) -> (B, sum(hidden) + memory)."""
        state, memory = gated_memory(self, inputs, self.memory, self.attend)
        return torch.cat([h for h, _ in state] + [memory], dim=1)


class SequenceCode(nn.Module):
    """An LSTM's last hidden state through a Linear layer: (B, T, d) -> (B, z)."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, size, batch_first=True)
        self.fc = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.fc(h[0])


class Factor(nn.Module):
    """ReLU(fc2(dropout(ReLU(fc1(z))))): a code to its factor."""

    def __init__(self, size: int, factor: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(size, factor)
        self.fc2 = nn.Linear(factor, factor)
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(two_layers(self.fc1, self.dropout, self.fc2, z))


class SequenceDecoder(nn.Module):
    """An LSTM cell unrolled for T steps from a vector (its first input, then its own hidden
    state), each step's hidden state through a Linear layer: (B, h) -> (B, T, d)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(size, size)
        self.fc = nn.Linear(size, dim)

    def forward(self, code: torch.Tensor, steps: int) -> torch.Tensor:
        h = c = code.new_zeros(code.shape)
        hidden, x = [], code
        for _ in range(steps):
            h, c = self.cell(x, (h, c))
            hidden.append(h)
            x = h
        return self.fc(torch.stack(hidden, dim=1))


class MFM(MSAModel):
    """Multimodal Factorization Model (module docstring)."""

    name = "mfm"
    loss_parts = ("reconstruction", "mmd")
    """The reconstruction MSEs weighted by ``{m}_recon_weight`` and summed (a mean over the
    rank's own samples), and the four MMDs summed before ``mmd_weight`` (on the global batch);
    the loss: task + reconstruction + mmd_weight x mmd."""

    def __init__(self, config: MFMConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__()
        c = self.config = config
        inputs = {"text": text_width(dims, "MFM"), "audio": dims.audio, "vision": dims.vision}
        codes = {"text": c.zl_size, "audio": c.za_size, "vision": c.zv_size, "y": c.zy_size}
        factors = {"text": c.fl_size, "audio": c.fa_size, "vision": c.fv_size, "y": c.fy_size}
        self.codes = nn.ModuleDict({m: SequenceCode(inputs[m], codes[m]) for m in MODALITIES})
        self.fusion = MemoryFusionEncoder(c, (inputs["text"], inputs["audio"], inputs["vision"]))
        self.to_zy = nn.Linear(self.fusion.out_size, c.zy_size)
        self.factors = nn.ModuleDict({
            m: Factor(codes[m], factors[m], getattr(c, f"z{k}_to_f{k}_dropout"))
            for m, k in (*_SHORT.items(), ("y", "y"))})
        self.decoders = nn.ModuleDict({
            m: SequenceDecoder(c.fy_size + factors[m], inputs[m]) for m in MODALITIES})
        self.head_fc1 = nn.Linear(c.fy_size, c.fy_size)
        self.head_fc2 = nn.Linear(c.fy_size, 1)
        self.head_dropout = nn.Dropout(c.fy_to_y_dropout)

    def reads_padding(self) -> bool:
        return True  # the LSTMs run over every padded step, the decoders rebuild them

    def forward(self, batch: Batch) -> ModelOutput:
        text = batch.text_features
        assert text is not None  # a model on precomputed text features gets them in every batch
        steps = text.size(1)
        x = {"text": text, "audio": mmsa_avg_pool(batch.audio, steps),
             "vision": mmsa_avg_pool(batch.vision, steps)}
        z = {m: self.codes[m](x[m]) for m in MODALITIES}
        z["y"] = self.to_zy(self.fusion((x["text"], x["audio"], x["vision"])))
        f = {m: self.factors[m](code) for m, code in z.items()}
        terms = {}
        for m in MODALITIES:
            terms[f"input_{m}"] = x[m]
            terms[f"recon_{m}"] = self.decoders[m](torch.cat([f["y"], f[m]], dim=1), steps)
        prediction = two_layers(self.head_fc1, self.head_dropout, self.head_fc2, f["y"])
        reps = {**{f"z_{m}": v for m, v in z.items()}, "f_y": f["y"]}
        return ModelOutput(prediction.squeeze(1), reps, terms)

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        """L1 + the weighted reconstruction MSEs + mmd_weight x the four MMDs (in training; in
        evaluation the L1 term alone, as MMSA's ``do_test``)."""
        task = l1_task(output, batch, ctx)
        if not self.training:
            return LossOutput(task, task)
        c, terms = self.config, output.terms
        recon = cast(torch.Tensor, sum(  # of three tensors
            getattr(c, f"{m}_recon_weight") * F.mse_loss(terms[f"recon_{m}"], terms[f"input_{m}"])
            for m in MODALITIES))
        mmd = cast(torch.Tensor, sum(  # of four tensors
            mmd_to_normal(ctx.gather(output.representations[f"z_{m}"]))
            for m in (*MODALITIES, "y")))
        auxiliary = recon + c.mmd_weight * mmd
        return LossOutput(task + auxiliary, task, {"reconstruction": recon, "mmd": mmd})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {m: (f"codes.{m}.", f"fusion.lstm_{m}.")
                                       for m in MODALITIES})


MMSA_RULES: list[tuple[str, str | None]] = [
    *((rf"encoder_{s}\.lstm\.(weight|bias)_(ih|hh)", rf"codes.{m}.lstm.\1_\2_l0")
      for m, s in _SHORT.items()),
    *((rf"encoder_{s}\.fc1\.(weight|bias)", rf"codes.{m}.fc.\1") for m, s in _SHORT.items()),
    *((rf"decoder_{s}\.lstm\.(.+)", rf"decoders.{m}.cell.\1") for m, s in _SHORT.items()),
    *((rf"decoder_{s}\.fc1\.(weight|bias)", rf"decoders.{m}.fc.\1") for m, s in _SHORT.items()),
    *((rf"mfn_encoder\.lstm_{s}\.(.+)", rf"fusion.lstm_{m}.\1") for m, s in _SHORT.items()),
    (r"mfn_encoder\.((?:att[12]|gamma[12])_fc[12])\.(weight|bias)", r"fusion.\1.\2"),
    (r"mfn_encoder\.out_fc[12]\.(weight|bias)", None),  # MFN's own output: MFM never reads it
    (r"last_to_zy_fc1\.(weight|bias)", r"to_zy.\1"),
    *((rf"z{k}_to_f{k}_fc([12])\.(weight|bias)", rf"factors.{m}.fc\1.\2")
      for m, k in (*_SHORT.items(), ("y", "y"))),
    (r"fy_to_y_fc([12])\.(weight|bias)", r"head_fc\1.\2"),
]
"""MMSA's key (after ``Model.``) -> msakit's; None: MMSA's entry, dropped."""


def mfm_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's MFM state dict (``torch.save(AMIO.state_dict())``, or its gradients) ->
    msakit's MFM's."""
    return rename_mmsa(state, MMSA_RULES, model="MFM")


def _mmsa_run(batch_size: int, weight_decay: float) -> dict:
    """MMSA's trainer: Adam at its default learning rate 1e-3 (the configuration's
    learning_rate is never passed) with L2 weight decay, no schedule, early stop after 8
    epochs, no epoch limit."""
    return {"text_encoder": None, "batch_size": batch_size,
            "lr": groups(text=1e-3, audio=1e-3, vision=1e-3, other=1e-3),
            "weight_decay": groups(text=weight_decay, audio=weight_decay, vision=weight_decay,
                                   other=weight_decay),
            "optimizer": "adam",
            "schedule": "constant", "warmup": 0.0, "early_stop": 8, "stop_at_horizon": False}


def _mfn_blocks(hidden: tuple[int, int, int], memory: int,
                *blocks: tuple[int, float]) -> dict:
    """MMSA's hidden_dims, memsize and (shapes, drop) of NN1, NN2, gamma1, gamma2."""
    model: dict[str, Any] = dict(
        zip(("text_hidden", "audio_hidden", "vision_hidden"), hidden, strict=True))
    model["memory"] = memory
    for name, (shapes, drop) in zip(("att1", "att2", "gamma1", "gamma2"), blocks, strict=True):
        model[f"{name}_hidden"], model[f"{name}_dropout"] = shapes, drop
    return model


def _codes(z: tuple[int, ...], f: tuple[int, ...], drops: tuple[float, ...],
           weights: tuple[float, ...]) -> dict:
    """(zy, zl, za, zv), (fy, fl, fa, fv), the five dropouts (zy..zv, fy_to_y) and lda_mmd,
    lda_xl, lda_xa, lda_xv as msakit's names."""
    keys = ("y", "l", "a", "v")
    out: dict[str, Any] = {f"z{k}_size": v for k, v in zip(keys, z, strict=True)}
    out |= {f"f{k}_size": v for k, v in zip(keys, f, strict=True)}
    out |= {f"z{k}_to_f{k}_dropout": v for k, v in zip(keys, drops[:4], strict=True)}
    out["fy_to_y_dropout"] = drops[4]
    names = ("mmd_weight", "text_recon_weight", "audio_recon_weight", "vision_recon_weight")
    return out | dict(zip(names, weights, strict=True))


PRESETS = {  # MMSA's config_regression.json, "mfm"
    "mosi": {"run": _mmsa_run(64, 1e-3), "model": {}},
    "mosei": {"run": _mmsa_run(64, 5e-4), "model": {
        **_mfn_blocks((256, 32, 256), 64, (1278, 0.5), (32, 0.7), (64, 0.5), (128, 0.2)),
        **_codes((32, 256, 80, 80), (16, 32, 80, 32), (0.2, 0.7, 0.7, 0.7, 0.2),
                 (10.0, 5.0, 2.0, 5.0))}},
    "sims": {"run": _mmsa_run(128, 5e-3), "model": {
        **_mfn_blocks((64, 16, 64), 128, (32, 0.5), (64, 0.5), (64, 0.7), (256, 0.0)),
        **_codes((48, 256, 32, 80), (48, 256, 80, 48), (0.5, 0.0, 0.7, 0.0, 0.7),
                 (200.0, 0.5, 0.01, 0.01))}},
}

_BLOCK_TUNE = {"hidden": [32, 64, 128, 256], "dropout": [0.0, 0.2, 0.5, 0.7]}
SPEC = register_model(
    ModelSpec(
        name="mfm",
        title="MFM",
        paper="Tsai et al., ICLR 2019",
        config=MFMConfig,
        build=MFM,
        presets=PRESETS,
        search_space={  # MMSA's config_tune.json ("mfm"); its trainer ignores learning_rate
            "memory": ("choice", [64, 128, 256, 300, 400]),
            **{f"{b}_{k}": ("choice", v) for b in ("att1", "att2", "gamma1", "gamma2")
               for k, v in _BLOCK_TUNE.items()},
            "att1_hidden": ("choice", [32, 64, 128, 256, 1278]),  # with MOSEI's own 1278
            "zy_size": ("choice", [8, 16, 32, 48, 64, 80]),
            "zl_size": ("choice", [32, 64, 88, 128, 156, 256]),
            "za_size": ("choice", [8, 16, 32, 48, 64, 80]),
            "zv_size": ("choice", [8, 16, 32, 48, 64, 80]),
            "fy_size": ("choice", [8, 16, 32, 48, 64, 80]),
            "fl_size": ("choice", [32, 64, 88, 128, 156, 256]),
            "fa_size": ("choice", [8, 16, 32, 48, 64, 80]),
            "fv_size": ("choice", [8, 16, 32, 48, 64, 80]),
            "mmd_weight": ("choice", [10.0, 50.0, 100.0, 200.0]),
            "text_recon_weight": ("choice", [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]),
            "audio_recon_weight": ("choice", [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]),
            "vision_recon_weight": ("choice", [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]),
        },
        text_input="features",
        imports={"mmsa": mfm_from_mmsa},
    )
)
