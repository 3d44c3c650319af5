"""MMIM: MultiModal InfoMax (Han et al., EMNLP 2021), as MMSA implements it.

Reads top to bottom: the sub-networks (sequence encoder, the fusion network, the two mutual-
information bounds), the model, its training phases and losses, then its registration.
Every reading and every difference between the paper and MMSA's code is in docs/readings.md
("MMIM"); msakit follows MMSA's code (``MMSA/models/singleTask/MMIM.py``,
``MMSA/trains/singleTask/MMIM.py``), and the MMSA weights of a model map one to one
(:func:`import_mmsa`).

* Text: BERT's last hidden state at [CLS] (fine-tuned). Audio and vision: a (bidirectional)
  LSTM over the valid frames, its final hidden state through a linear layer.
* Fusion: dropout, Linear, tanh, Linear, tanh (the fusion vector z) and a linear head.
* Input-level MI (MMILB, Sec. 3.2): a Gaussian q(y | x) with an MLP for its mean and one for its
  log-variance; ``lld`` is the mean over the batch of sum_d -(mu - y)^2 / (2 exp(logvar)), for
  the pairs text-vision, text-audio (and vision-audio when ``add_va``). Its entropy term H
  (Sec. 3.3): y projected to a quarter of its width (tanh), split into positive and negative
  samples by the label's sign and, with a memory of the last ``mem_size`` batches' projections,
  H = (logdet Sigma_pos + logdet Sigma_neg) / 4.
* Fusion-level MI (CPC, Sec. 3.4): z predicts each modality's vector through a linear map; both
  are L2-normalised and the score is InfoNCE over the batch (``nce``, summed over t, a, v).

Training (MMSA's trainer): every epoch has two passes over the training batches, each with an
optimizer of its own (:meth:`MMIM.training_phases`, the Trainer's generic phases). ``mmilb``
(when ``contrast``): maximise ``lld`` with the MMILB parameters' optimizer only (on MOSEI over the
first half of the batches, ``mmilb_fraction`` 0.5); ``main``: L1 + alpha * nce - beta * lld
- beta * H with the optimizer of every other parameter (the MMILB ones are not stepped). The
memory is reset at the start of each ``main`` pass; H enters the loss from its batch
``mem_size + 1`` on. Both passes use Adam with L2 weight decay on every parameter (the preset's
``optimizer=adam``; ``text_no_decay = ()``: BERT's biases and LayerNorms decay too) and clip the
gradient norm of all parameters. Before training, every weight matrix of the non-BERT
parameters is drawn from Xavier's normal distribution, as MMSA's trainer does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.encoders.recurrent import FinalStateLSTM
from msakit.encoders.text import bert_inputs
from msakit.models.base import (
    LOCAL,
    Batch,
    Dims,
    LossContext,
    LossOutput,
    ModelOutput,
    MSAModel,
    TrainingPhase,
    groups_by_prefix,
    l1_task,
)
from msakit.models.import_weights import Source, _same, load_reference_state
from msakit.models.registry import ModelSpec, register_model

ACTIVATIONS = ("ReLU", "Tanh", "Sigmoid", "ELU", "GELU", "LeakyReLU")


@dataclass
class MMIMConfig(ModelConfig, model="mmim"):
    """MMIM's hyperparameters: MMSA's ``config_regression.json`` (the same for MOSI, MOSEI and
    SIMS apart from ``mmilb_fraction``, which MMSA's trainer sets for MOSEI)."""

    audio_hidden: int = hp(16, "LSTM width of the audio encoder (MMSA d_ah)", low=1)
    vision_hidden: int = hp(16, "LSTM width of the vision encoder (MMSA d_vh)", low=1)
    audio_out: int = hp(16, "width of the audio vector (MMSA d_aout)", low=1)
    vision_out: int = hp(16, "width of the vision vector (MMSA d_vout)", low=1)
    rnn_layers: int = hp(1, "LSTM layers (MMSA n_layer)", low=1)
    bidirectional: bool = hp(True, "bidirectional LSTMs")
    audio_dropout: float = hp(
        0.1, "dropout of the audio LSTM, only with rnn_layers > 1 (MMSA dropout_a)",
        low=0.0, high=1.0)
    vision_dropout: float = hp(
        0.1, "dropout of the vision LSTM, only with rnn_layers > 1 (MMSA dropout_v)",
        low=0.0, high=1.0)
    fusion_dim: int = hp(128, "width of the fusion vector z (MMSA d_prjh)", low=1)
    fusion_dropout: float = hp(0.1, "dropout before the fusion network (MMSA dropout_prj)",
                               low=0.0, high=1.0)
    cpc_layers: int = hp(1, "layers of each CPC prediction network", low=1)
    cpc_activation: str = hp("Tanh", "activation between CPC layers", choices=ACTIVATIONS)
    mmilb_activation: str = hp("ReLU", "activation inside the MMILB MLPs (MMSA "
                               "mmilb_mid_activation)", choices=ACTIVATIONS)
    add_va: bool = hp(False, "also bound the vision-audio MI")
    contrast: bool = hp(True, "use the MI terms (false: L1 and the entropy term only, no "
                        "mmilb pass), as MMSA's 'contrast'")
    alpha: float = hp(0.1, "weight of the CPC loss (nce)", low=0.0)
    beta: float = hp(0.1, "weight of the MMILB terms (lld and H)", low=0.0)
    mem_size: int = hp(1, "batches of projections the entropy estimate remembers", low=1)
    mmilb_fraction: float = hp(1.0, "share of the training batches of each mmilb pass (MMSA: "
                               "0.5 on MOSEI), in (0, 1]", low=0.0)
    lr_mmilb: float = hp(1e-3, "learning rate of the MMILB parameters' optimizer", low=0.0)
    weight_decay_mmilb: float = hp(1e-4, "weight decay (L2) of the MMILB parameters", low=0.0)

    def check_combination(self) -> None:
        if not 0 < self.mmilb_fraction <= 1:
            raise MsakitError(f"mmim mmilb_fraction must be in (0, 1], got {self.mmilb_fraction}")
        if not self.lr_mmilb > 0:
            raise MsakitError(f"mmim lr_mmilb must be > 0, got {self.lr_mmilb}")


class FusionNetwork(nn.Module):
    """Dropout, Linear + tanh, Linear + tanh (z), Linear (the prediction)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.linear_3 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, in_dim) -> (z (B, hidden), prediction (B,))."""
        z = torch.tanh(self.linear_2(torch.tanh(self.linear_1(self.dropout(x)))))
        return z, self.linear_3(z).squeeze(-1)


class MMILB(nn.Module):
    """The modality MI lower bound of a pair (x, y) and its entropy estimate (see the module
    docstring). MMSA's ``mmilb_last_activation`` is never applied by its code; so here."""

    def __init__(self, x_dim: int, y_dim: int, activation: str) -> None:
        super().__init__()
        act = getattr(nn, activation)
        self.mlp_mu = nn.Sequential(nn.Linear(x_dim, y_dim), act(), nn.Linear(y_dim, y_dim))
        self.mlp_logvar = nn.Sequential(nn.Linear(x_dim, y_dim), act(), nn.Linear(y_dim, y_dim))
        self.entropy_prj = nn.Sequential(nn.Linear(y_dim, y_dim // 4), nn.Tanh())

    def lld(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the Gaussian log-likelihood of y given x (no constant)."""
        mu, logvar = self.mlp_mu(x), self.mlp_logvar(x)
        return torch.mean(torch.sum(-((mu - y) ** 2) / 2.0 / torch.exp(logvar), dim=-1))

    def samples(self, y: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The projected y of the positive and the negative samples (label 0: neither)."""
        projected = self.entropy_prj(y)
        return {"pos": projected[labels > 0], "neg": projected[labels < 0]}

    @staticmethod
    def entropy(samples: dict[str, torch.Tensor],
                memory: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        """(logdet Sigma_pos + logdet Sigma_neg) / 4 over the memory and this batch."""
        total: torch.Tensor | float = 0.0
        for sign in ("pos", "neg"):
            rows = torch.cat([*memory[sign], samples[sign]], dim=0)
            centred = rows - rows.mean(dim=0)
            sigma = torch.mean(centred.unsqueeze(-1) * centred.unsqueeze(1), dim=0)
            total = total + torch.logdet(sigma)
        return 0.25 * cast(torch.Tensor, total)  # two logdets were added


class CPC(nn.Module):
    """Contrastive predictive coding of one modality's vector x from the fusion vector z: a
    linear map (or ``layers`` of them, the activation after the first) predicts x from z; both
    are L2-normalised and the loss is InfoNCE over the batch (Sec. 3.4, MMSA's CPC)."""

    def __init__(self, z_dim: int, x_dim: int, *, layers: int, activation: str) -> None:
        super().__init__()
        if layers == 1:
            self.net: nn.Module = nn.Linear(z_dim, x_dim)
        else:
            stack = [nn.Linear(z_dim, x_dim), getattr(nn, activation)()]
            stack += [nn.Linear(x_dim, x_dim) for _ in range(layers - 1)]
            self.net = nn.Sequential(*stack)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        pred = self.net(z)
        pred = pred / pred.norm(dim=1, keepdim=True)
        x = x / x.norm(dim=1, keepdim=True)
        positive = torch.sum(x * pred, dim=-1)
        negative = torch.logsumexp(x @ pred.t(), dim=-1)
        return -(positive - negative).mean()


class MMIM(MSAModel):
    """The MMIM model; see the module docstring."""

    name = "mmim"
    text_no_decay = ()  # MMSA decays every BERT parameter

    def __init__(self, config: MMIMConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("mmim needs a BERT text encoder")
        self.config = c = MMIMConfig.from_dict(config)
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        d_text: int = bert.hidden_size
        self.text_encoder = text_encoder
        self.audio_encoder = FinalStateLSTM(
            dims.audio, c.audio_hidden, c.audio_out, layers=c.rnn_layers,
            dropout=c.audio_dropout, bidirectional=c.bidirectional, state="first")
        self.vision_encoder = FinalStateLSTM(
            dims.vision, c.vision_hidden, c.vision_out, layers=c.rnn_layers,
            dropout=c.vision_dropout, bidirectional=c.bidirectional, state="first")
        self.mi_tv = MMILB(d_text, c.vision_out, c.mmilb_activation)
        self.mi_ta = MMILB(d_text, c.audio_out, c.mmilb_activation)
        self.mi_va = MMILB(c.vision_out, c.audio_out, c.mmilb_activation) if c.add_va else None
        self.cpc_text = CPC(c.fusion_dim, d_text, layers=c.cpc_layers,
                            activation=c.cpc_activation)
        self.cpc_vision = CPC(c.fusion_dim, c.vision_out, layers=c.cpc_layers,
                              activation=c.cpc_activation)
        self.cpc_audio = CPC(c.fusion_dim, c.audio_out, layers=c.cpc_layers,
                             activation=c.cpc_activation)
        self.fusion = FusionNetwork(d_text + c.audio_out + c.vision_out, c.fusion_dim,
                                    c.fusion_dropout)
        for name, param in self.named_parameters():  # MMSA's trainer, before training
            if param.dim() > 1 and not name.startswith("text_encoder."):
                nn.init.xavier_normal_(param)
        self.phase = "main"
        self._reset_memory()

    # ------------------------------------------------------------------ training phases
    def training_phases(self) -> tuple[TrainingPhase, ...]:
        main = TrainingPhase("main", groups=("text", "audio", "vision", "other"))
        if not self.config.contrast:
            return (main,)
        return (TrainingPhase("mmilb", groups=("mmilb",), fraction=self.config.mmilb_fraction),
                main)

    @property
    def loss_parts(self) -> tuple[str, ...]:  # type: ignore[override]
        """The terms of the pass, unweighted: the mmilb pass maximises ``lld`` (its loss is
        -lld); the main pass's loss is task - beta x entropy (H) [+ alpha x nce - beta x lld
        with ``contrast``]. Each a mean over the rank's own samples."""
        if self.phase != "main":
            return ("lld",)
        return ("nce", "lld", "entropy") if self.config.contrast else ("entropy",)

    def start_phase(self, name: str) -> None:
        self.phase = name
        if name == "main":
            self._reset_memory()

    def _reset_memory(self) -> None:
        self._step = 0
        self._memory: dict[str, dict[str, list[torch.Tensor]]] = {
            pair: {"pos": [], "neg": []} for pair in self._pairs()
        }

    def _pairs(self) -> tuple[str, ...]:
        return ("tv", "ta", "va") if self.config.add_va else ("tv", "ta")

    def optimizer_settings(self, config: Any) -> dict[str, tuple[float, float]]:
        settings = super().optimizer_settings(config)
        settings["mmilb"] = (self.config.lr_mmilb, self.config.weight_decay_mmilb)
        return settings

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {"text": ("text_encoder.",), "audio": ("audio_encoder.",),
                                       "vision": ("vision_encoder.",), "mmilb": ("mi_",)})

    # ------------------------------------------------------------------ forward and losses
    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """text (B, 3, Lt) -> {"cls": BERT's last hidden state at [CLS] (B, d_t)}."""
        return {"cls": self.text_encoder(**bert_inputs(text)).last_hidden_state[:, 0]}

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.cached_text_features(batch)["cls"]
        audio = self.audio_encoder(batch.audio, batch.audio_lengths)
        vision = self.vision_encoder(batch.vision, batch.vision_lengths)
        z, prediction = self.fusion(torch.cat([text, audio, vision], dim=1))
        reps = {"text": text, "audio": audio, "vision": vision, "fusion": z}
        terms: dict[str, torch.Tensor] = {}
        if self.training:
            vectors = {"t": text, "a": audio, "v": vision}
            terms = self._mmilb_terms(vectors, batch.labels)
            if self.phase == "main":
                terms["nce"] = (self.cpc_text(text, z) + self.cpc_vision(vision, z)
                                + self.cpc_audio(audio, z))
        return ModelOutput(prediction=prediction, representations=reps, terms=terms)

    def _mmilb_terms(self, vectors: dict[str, torch.Tensor],
                     labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """lld summed over the pairs; in the main pass also H (from the memory) and the memory's
        update with this batch's projections, as MMSA's trainer does."""
        lld: torch.Tensor | float = 0.0
        entropy: torch.Tensor | float = 0.0
        main = self.phase == "main"
        # MMSA estimates H once the memory holds mem_size batches and uses it one batch later.
        use_h = self._step > self.config.mem_size
        for pair in self._pairs():
            net: MMILB = getattr(self, f"mi_{pair}")
            x, y = vectors[pair[0]], vectors[pair[1]]
            lld = lld + net.lld(x, y)
            if main:
                samples = net.samples(y, labels)
                if use_h:
                    entropy = entropy + net.entropy(samples, self._memory[pair])
                self._remember(pair, samples)
        assert isinstance(lld, torch.Tensor)  # _pairs() names two or three pairs
        terms = {"lld": lld}
        if main:
            terms["H"] = cast(torch.Tensor, entropy) if use_h else lld.new_zeros(())
            self._step += 1
        return terms

    def _remember(self, pair: str, samples: dict[str, torch.Tensor]) -> None:
        memory = self._memory[pair]
        for sign in ("pos", "neg"):
            value = samples[sign].detach()
            if len(memory[sign]) < self.config.mem_size:
                memory[sign].append(value)
            else:  # full: the oldest is replaced
                memory[sign][self._step % self.config.mem_size] = value

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        task = l1_task(output, batch, ctx)
        terms = output.terms
        if not terms:  # evaluation
            return LossOutput(task, task)
        if self.phase != "main":  # the mmilb pass: maximise lld only
            return LossOutput(-terms["lld"], task.detach(), {"lld": terms["lld"]})
        c = self.config
        mi = -c.beta * terms["H"]
        if c.contrast:
            mi = mi + c.alpha * terms["nce"] - c.beta * terms["lld"]
        names = {"nce": "nce", "lld": "lld", "entropy": "H"}
        return LossOutput(task + mi, task, {k: terms[names[k]] for k in self.loss_parts})



# --------------------------------------------------------------------------- MMSA's weights
_MMSA_RULES: list[tuple[str, str, Any]] = [
    (r"bertmodel\.model\.(.+)", r"text_encoder.\1", _same),
    (r"acoustic_enc\.rnn\.(.+)", r"audio_encoder.rnn.\1", _same),
    (r"acoustic_enc\.linear_1\.(weight|bias)", r"audio_encoder.out.\1", _same),
    (r"visual_enc\.rnn\.(.+)", r"vision_encoder.rnn.\1", _same),
    (r"visual_enc\.linear_1\.(weight|bias)", r"vision_encoder.out.\1", _same),
    (r"(mi_tv|mi_ta|mi_va)\.(mlp_mu\.[02]|mlp_logvar\.[02]|entropy_prj\.0)\.(weight|bias)",
     r"\1.\2.\3", _same),
    (r"cpc_zt\.net\.(.+)", r"cpc_text.net.\1", _same),
    (r"cpc_zv\.net\.(.+)", r"cpc_vision.net.\1", _same),
    (r"cpc_za\.net\.(.+)", r"cpc_audio.net.\1", _same),
    (r"fusion_prj\.(linear_[123])\.(weight|bias)", r"fusion.\1.\2", _same),
]
MMSA_SOURCE = Source(
    name="mmsa",
    model="mmim",
    prefix="Model.",
    rules=_MMSA_RULES,
    dead=(),
    preset="paper",
    describe="the AMIO module of MMSA's MMIM (thuiar/MMSA)",
)


def import_mmsa(state: dict[str, torch.Tensor], model: MMIM | None = None,
                where: str = "MMSA state dict") -> dict[str, torch.Tensor]:
    """msakit's MMIM state dict from the state dict of MMSA's ``AMIO`` for ``mmim`` (keys
    ``Model.*``, as MMSA saves it). Every MMSA entry maps one to one (renamed, same shape):

    ==============================================  =========================================
    MMSA key (after ``Model.``)                     msakit key
    ==============================================  =========================================
    ``bertmodel.model.*``                           ``text_encoder.*``
    ``acoustic_enc.rnn.* / linear_1.*``             ``audio_encoder.rnn.* / out.*``
    ``visual_enc.rnn.* / linear_1.*``               ``vision_encoder.rnn.* / out.*``
    ``mi_tv / mi_ta / mi_va.*``                     the same
    ``cpc_zt / cpc_zv / cpc_za.net.*``              ``cpc_text / cpc_vision / cpc_audio.net.*``
    ``fusion_prj.linear_{1,2,3}.*``                 ``fusion.linear_{1,2,3}.*``
    ==============================================  =========================================

    With ``model``, every entry is checked against it (unknown, missing and misshapen entries:
    one :class:`MsakitError` line); without, unknown entries are the error.
    """
    if model is not None:
        return load_reference_state(MMSA_SOURCE, state, model, where)
    if not isinstance(state, dict):
        raise MsakitError(f"{where}: not a state dict (a dict of tensors by name)")
    unknown = [k for k in state if MMSA_SOURCE.target(k) is None]
    if unknown:
        raise MsakitError(f"{where}: not {MMSA_SOURCE.describe}: unexpected keys "
                          f"{', '.join(unknown[:3])}")
    return MMSA_SOURCE.convert(state, {})


# --------------------------------------------------------------------------- registration
def _mmsa_run(text_encoder: str) -> dict[str, Any]:
    """MMSA's run settings for MMIM (the same on every data set but the text encoder)."""
    return {
        "text_encoder": text_encoder,
        "batch_size": 32,
        "epochs": 200,  # a cap (msakit's choice); MMSA stops only early (8 epochs)
        "early_stop": 8,
        "lr": groups(text=5e-5, audio=1e-3, vision=1e-3, other=1e-3),  # lr_bert, lr_main
        # weight_decay_bert, weight_decay_main
        "weight_decay": groups(text=1e-4, audio=1e-4, vision=1e-4, other=1e-4),
        "optimizer": "adam",
        "grad_clip": 1.0,
        "schedule": "constant",  # ReduceLROnPlateau(patience 20) never fires (docs/readings.md)
        "warmup": 0.0,
    }


MMIM_DATASET = {
    "mosi": {"run": _mmsa_run("bert-base-uncased"), "model": {}},
    "mosei": {"run": _mmsa_run("bert-base-uncased"), "model": {"mmilb_fraction": 0.5}},
    "sims": {"run": _mmsa_run("bert-base-chinese"), "model": {}},
}

_RATES = [1e-4, 1e-3, 5e-3]
SEARCH_SPACE = {  # MMSA's config_tune.json for MMIM (lr_main for the audio/vision/other groups)
    "lr.audio": ("choice", _RATES),
    "lr.vision": ("choice", _RATES),
    "lr.other": ("choice", _RATES),
    "lr_mmilb": ("choice", _RATES),
    "alpha": ("choice", [0.0, 0.1, 0.2, 0.3, 0.4]),
    "beta": ("choice", [0.0, 0.1, 0.2, 0.3, 0.4]),
    "fusion_dropout": ("choice", [0.0, 0.1, 0.2, 0.3, 0.4]),
    "fusion_dim": ("choice", [64, 128, 256, 512]),
    "cpc_layers": ("choice", [1, 2, 3, 4]),
}

SPEC = register_model(
    ModelSpec(
        name="mmim",
        title="MMIM",
        paper="Han et al., EMNLP 2021",
        config=MMIMConfig,
        build=MMIM,
        presets=MMIM_DATASET,
        search_space=SEARCH_SPACE,
        imports={"mmsa": import_mmsa},
    )
)
