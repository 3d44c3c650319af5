"""Graph-MFN: MFN with the Dynamic Fusion Graph (Zadeh et al., ACL 2018, the CMU-MOSEI paper), as
MMSA implements it.

MFN's LSTM cells, gated memory and output network (:class:`msakit.models.mfn.MemoryFusion`);
at each step the memory reads the Dynamic Fusion Graph's top vertex τ instead of MFN's
attention: each modality's singleton vertex is ReLU(Linear([h_{t-1}; h_t])); the efficacies
α (19 for three modalities) are a linear function of the three singletons; each bimodal and the
trimodal vertex is a network over its proper subsets' vertices, each scaled by its efficacy;
τ is a network over all seven vertices, scaled likewise. Every network of the graph is two
Linear layers through a width of 100 with no activation between them (MMSA's code). MMSA reads
the word-aligned sequences (``need_normalized`` false): ``audio_vision="aligned"``.

MMSA keeps the four vertex networks (the bimodal and trimodal ones) in a plain dict: they are
not in its ``state_dict`` nor in its optimizer, so they keep their random initial values during
training and are missing from its saved weights (MMSA draws new ones whenever it builds the
model, so a saved MMSA Graph_MFN does not reproduce its own predictions in a new process).
msakit holds them in its state dict, untrained by default (``train_node_networks=False``, as
MMSA trains); :func:`mmsa_state` saves them with MMSA's weights from an MMSA model in memory, for
``msakit import-weights --from mmsa``. docs/readings.md ("Graph-MFN") has the details.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.models.base import Dims
from msakit.models.import_weights import rename_mmsa
from msakit.models.lf_dnn import mmsa_adam_run
from msakit.models.mfn import AUDIO_VISION, TUNE_BLOCKS, MemoryFusion
from msakit.models.registry import ModelSpec, register_model

NODES = ((0, 1), (0, 2), (1, 2), (0, 1, 2))
"""The graph's multimodal vertices (0 text, 1 audio, 2 vision), in MMSA's order."""
PATTERN_WIDTH = 100
"""The inner width of every network of the graph (fixed in MMSA's code)."""


def proper_subsets(node: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The vertices a vertex reads, in MMSA's order: its non-empty proper subsets by size."""
    return [s for r in range(1, len(node)) for s in combinations(node, r)]


def node_name(node: tuple[int, ...]) -> str:
    return "_".join(map(str, node))


def pattern_network(width: int, out: int) -> nn.Sequential:
    """Linear(width, 100) -> Linear(100, out), no activation (MMSA's vertex networks)."""
    return nn.Sequential(nn.Linear(width, PATTERN_WIDTH), nn.Linear(PATTERN_WIDTH, out))


class DynamicFusionGraph(nn.Module):
    """Singleton vertices (B, d_m) of the three modalities -> the top vertex τ (B, inner)."""

    def __init__(self, widths: tuple[int, int, int], inner: int) -> None:
        super().__init__()
        self.nodes = nn.ModuleDict()
        for node in NODES:
            subsets = proper_subsets(node)
            width = sum(widths[m] for m in node) + (len(subsets) - len(node)) * inner
            self.nodes[node_name(node)] = pattern_network(width, inner)
        self.t_network = pattern_network(sum(widths) + len(NODES) * inner, inner)
        efficacies = sum(len(proper_subsets(n)) for n in NODES) + len(NODES) + len(widths)
        self.efficacy = nn.Sequential(*pattern_network(sum(widths), inner),
                                      nn.Linear(inner, efficacies))

    def forward(self, singletons: list[torch.Tensor]) -> torch.Tensor:
        vertices: dict[tuple[int, ...], torch.Tensor] = {
            (m,): x for m, x in enumerate(singletons)}
        alpha = self.efficacy(torch.cat(singletons, dim=1))
        used = 0

        def weighted(sources: list[tuple[int, ...]]) -> torch.Tensor:
            return torch.cat([vertices[s] * alpha[:, used + k].view(-1, 1)
                              for k, s in enumerate(sources)], dim=1)

        for node in NODES:
            sources = proper_subsets(node)
            vertices[node] = self.nodes[node_name(node)](weighted(sources))
            used += len(sources)
        return self.t_network(weighted([*proper_subsets(NODES[-1]), NODES[-1]]))


@dataclass
class GraphMFNConfig(ModelConfig, model="graph_mfn"):
    """Graph-MFN's hyperparameters. Defaults: MMSA's MOSI configuration
    (config_regression.json); the other data sets' values are the presets at the end of this
    file. The singleton vertices are as wide as the LSTM cells (MMSA)."""

    text_hidden: int = hp(256, "width of the text LSTM cell (MMSA hidden_dims[0])", low=1)
    audio_hidden: int = hp(32, "width of the audio LSTM cell (MMSA hidden_dims[1])", low=1)
    vision_hidden: int = hp(256, "width of the vision LSTM cell (MMSA hidden_dims[2])", low=1)
    memory: int = hp(300, "width of the gated memory u (MMSA memsize)", low=1)
    inner: int = hp(64, "width of the graph's vertices and of τ (MMSA inner_node_dim)", low=1)
    att2_hidden: int = hp(32, "hidden width of the network that proposes the memory update "
                          "(MMSA NNConfig)", low=1)
    att2_dropout: float = hp(0.0, "dropout in that network", low=0.0, high=1.0)
    gamma1_hidden: int = hp(128, "hidden width of the retain gate's network", low=1)
    gamma1_dropout: float = hp(0.5, "dropout in the retain gate's network", low=0.0, high=1.0)
    gamma2_hidden: int = hp(64, "hidden width of the update gate's network", low=1)
    gamma2_dropout: float = hp(0.5, "dropout in the update gate's network", low=0.0, high=1.0)
    out_hidden: int = hp(256, "hidden width of the output network", low=1)
    out_dropout: float = hp(0.0, "dropout in the output network", low=0.0, high=1.0)
    train_node_networks: bool = hp(
        False, "train the bimodal and trimodal vertex networks (the paper); MMSA leaves them "
        "at their random initial values")
    audio_vision: str = hp("aligned", "aligned: the word-aligned sequences (MMSA); mean: every "
                           "step reads the time means of audio and vision", choices=AUDIO_VISION)


class GraphMFN(MemoryFusion):
    """Graph Memory Fusion Network (module docstring)."""

    def __init__(self, config: GraphMFNConfig, dims: Dims,
                 text_encoder: nn.Module | None = None) -> None:
        super().__init__(config, dims, config.inner, "Graph-MFN")
        hidden = (config.text_hidden, config.audio_hidden, config.vision_hidden)
        self.transforms = nn.ModuleList(nn.Linear(2 * h, h) for h in hidden)
        self.graph = DynamicFusionGraph(hidden, config.inner)
        self.graph.nodes.requires_grad_(config.train_node_networks)

    def attend(self, previous, new):
        """τ of the fusion graph over the singletons ReLU(Linear([h_{t-1}; h_t]))."""
        singletons = [F.relu(transform(torch.cat([h_prev, h_new], dim=1)))
                      for transform, (h_prev, _), (h_new, _)
                      in zip(self.transforms, previous, new, strict=True)]
        return self.graph(singletons)


MMSA_NODES = r"graph_mfn\.networks\.([0-2](?:_[0-2])+)"
MMSA_GRAPH_MFN_RULES: list[tuple[str, str | None]] = [
    (r"lstm_l\.(.+)", r"lstm_text.\1"),
    (r"lstm_a\.(.+)", r"lstm_audio.\1"),
    (r"lstm_v\.(.+)", r"lstm_vision.\1"),
    (r"l_transform\.(weight|bias)", r"transforms.0.\1"),
    (r"a_transform\.(weight|bias)", r"transforms.1.\1"),
    (r"v_transform\.(weight|bias)", r"transforms.2.\1"),
    (r"graph_mfn\.t_network\.0\.(weight|bias)", r"graph.t_network.0.\1"),
    (r"graph_mfn\.t_network\.1\.0\.(weight|bias)", r"graph.t_network.1.\1"),
    (r"graph_mfn\.efficacy_model\.0\.(weight|bias)", r"graph.efficacy.0.\1"),
    (r"graph_mfn\.efficacy_model\.1\.0\.(weight|bias)", r"graph.efficacy.1.\1"),
    (r"graph_mfn\.efficacy_model\.2\.(weight|bias)", r"graph.efficacy.2.\1"),
    (MMSA_NODES + r"\.0\.(weight|bias)", r"graph.nodes.\1.0.\2"),
    (MMSA_NODES + r"\.1\.0\.(weight|bias)", r"graph.nodes.\1.1.\2"),
    (r"((?:att2|gamma[12]|out)_fc[12])\.(weight|bias)", r"\1.\2"),
]


def mmsa_state(amio: Any) -> dict[str, torch.Tensor]:
    """The weights of an MMSA ``AMIO`` Graph_MFN in memory: its ``state_dict()`` plus the four
    vertex networks it keeps outside it (``Model.graph_mfn.networks.0_1.0.weight``, ...). Save
    this (``torch.save``) for ``msakit import-weights --from mmsa``."""
    state = dict(amio.state_dict())
    for node, network in amio.Model.graph_mfn.networks.items():
        for key, value in network.state_dict().items():
            state[f"Model.graph_mfn.networks.{node_name(node)}.{key}"] = value
    return state


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's Graph_MFN weights as :func:`mmsa_state` saves them -> msakit's Graph-MFN's.

    A plain ``AMIO.state_dict()`` lacks the vertex networks: refused by name."""
    if any(k.startswith("Model.lstm_l.") for k in state) and not any(
            k.startswith("Model.graph_mfn.networks.") for k in state):
        raise MsakitError(
            "MMSA's Graph_MFN weights lack its four fusion-graph vertex networks (MMSA keeps "
            "them outside its state_dict and draws new ones whenever it builds the model); "
            "save the MMSA model in memory with msakit.models.graph_mfn.mmsa_state(model)")
    return rename_mmsa(state, MMSA_GRAPH_MFN_RULES, model="Graph_MFN")


def _graph_mfn(hidden: tuple[int, int, int], memory: int, inner: int,
               *blocks: tuple[int, float]) -> dict:
    """MMSA's hidden_dims, memsize, inner_node_dim and (shapes, drop) of NN, gamma1, gamma2,
    out."""
    model: dict[str, Any] = dict(
        zip(("text_hidden", "audio_hidden", "vision_hidden"), hidden, strict=True))
    model.update(memory=memory, inner=inner)
    for name, (shapes, drop) in zip(("att2", "gamma1", "gamma2", "out"), blocks, strict=True):
        model[f"{name}_hidden"], model[f"{name}_dropout"] = shapes, drop
    return model


GRAPH_MFN_PRESETS = {  # MMSA's config_regression.json, "graph_mfn" (aligned files: MOSI, MOSEI)
    "mosi": {"run": mmsa_adam_run(32, 2e-3, 5e-3), "model": _graph_mfn(
        (256, 32, 256), 300, 64, (32, 0.0), (128, 0.5), (64, 0.5), (256, 0.0))},
    "mosei": {"run": mmsa_adam_run(64, 2e-3, 1e-3), "model": _graph_mfn(
        (64, 16, 64), 300, 128, (32, 0.5), (64, 0.0), (256, 0.7), (128, 0.7))},
    "sims": {"run": mmsa_adam_run(64, 5e-4, 1e-3), "model": _graph_mfn(
        (256, 32, 256), 64, 128, (256, 0.5), (32, 0.2), (32, 0.7), (256, 0.2))},
    "simsv2": {"run": mmsa_adam_run(32, 2e-3, 0.0), "model": _graph_mfn(  # the repository's
        (64, 16, 64), 400, 32, (32, 0.7), (256, 0.5), (256, 0.2), (256, 0.2))},
}

SPEC = register_model(
    ModelSpec(
        name="graph_mfn",
        title="Graph-MFN",
        paper="Zadeh et al., ACL 2018",
        config=GraphMFNConfig,
        build=GraphMFN,
        presets=GRAPH_MFN_PRESETS,
        search_space={  # MMSA's config_tune.json, "graph_mfn"
            "memory": ("choice", [64, 128, 256, 300, 400]),
            "inner": ("choice", [20, 32, 64, 128]),
            **{k: v for k, v in TUNE_BLOCKS.items() if not k.startswith("att1")},
            "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
            "weight_decay": ("choice", [0.0, 1e-3, 5e-3, 1e-2]),
        },
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
