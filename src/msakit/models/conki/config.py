"""ConKI's hyperparameters (:class:`ConKIConfig`) and the constants of its architecture
(Appendix B: where the adapters are inserted)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError

MODALITIES = ("text", "vision", "audio")  # the paper's order t, v, a
LETTERS = {"t": "text", "v": "vision", "a": "audio"}
TEXT_INSERT = ((1, 6, 11), 12)  # Appendix B: before BERT layers 1, 6, 11 of 12
AV_INSERT = ((2,), 2)  # before layer 2 of the 2-layer audio/vision encoders
ADAPTER_LAYERS = 2  # Transformer layers inside each adapter module (Sec. 3.3)
FEEDFORWARD_RATIO = 4  # adapter feed-forward width / adapter_dim
FUSIONS = ("gate", "modality")
# What `msakit plot tsne` draws: pan-knowledge O_m and knowledge-specific A_m, paper order t, v, a.
PLOT_NAMES = {
    "pan_text": "$O_t$ (pan)", "pan_vision": "$O_v$ (pan)", "pan_audio": "$O_a$ (pan)",
    "specific_text": "$A_t$ (specific)", "specific_vision": "$A_v$ (specific)",
    "specific_audio": "$A_a$ (specific)",
}
POOLS = ("mean", "cls")


def insertion_points(paper: tuple[tuple[int, ...], int], depth: int) -> list[int]:
    """Indices k into the backbone's hidden states (k = input of layer k + 1), by relative depth.

    ``paper`` is (1-based layers the paper inserts before, the paper's depth). The module before
    layer l of P goes before layer floor((l - 1)·depth/P + 1/2) + 1, clamped to the last layer;
    duplicates are dropped, order kept. ``insertion_points(TEXT_INSERT, 12) == [0, 5, 10]``.
    """
    layers, paper_depth = paper
    points: list[int] = []
    for layer in layers:
        k = min(depth - 1, math.floor((layer - 1) * depth / paper_depth + 0.5))
        if k not in points:
            points.append(k)
    return points


def parse_modalities(spec: str) -> list[str]:
    """A subset string such as ``"ta"`` -> modality names in the paper's order (t, v, a)."""
    letters = set(spec)
    if not spec or not letters <= set(LETTERS) or len(letters) != len(spec):
        raise ValueError(f"modalities must be a non-empty subset of 't', 'v', 'a', got {spec!r}")
    return [m for m in MODALITIES if m[0] in letters]


@dataclass
class ConKIConfig(ModelConfig, model="conki"):
    """ConKI's hyperparameters. Defaults: Appendix B of the paper (MOSI); values the paper leaves
    open are msakit's choice (docs/readings.md); per-dataset values are the presets
    (:mod:`msakit.models.conki.presets`)."""

    shared_dim: int | None = hp(
        None, "audio/vision width after the input projection; null = the text encoder's width "
        "(the contrastive loss compares O_t with O_a, O_v)", low=1,
    )
    encoder_heads: int = hp(
        4, "heads of the audio/vision Transformer encoders (msakit's choice)", low=1
    )
    encoder_layers: int = hp(2, "layers of the audio/vision encoders (Appendix B)", low=1)
    feedforward: int = hp(
        512, "feed-forward width of the audio/vision encoders (msakit's choice)", low=1
    )
    encoder_dropout: float = hp(
        0.1, "dropout in the audio/vision encoders (msakit's choice)", low=0.0, high=1.0
    )
    adapter_dim: int = hp(
        64, "width inside an adapter module, after FC down (msakit's choice)", low=1
    )
    adapter_heads: int = hp(4, "attention heads inside an adapter module (msakit's choice)", low=1)
    adapter_dropout: float = hp(
        0.1, "dropout inside the adapters (msakit's choice)", low=0.0, high=1.0
    )
    adapter_residual: bool = hp(
        False, "True: K-Adapter's reading, module output = input + FC up"
    )
    adapter_pool: str = hp(
        "mean", "A_m from the last module: mean over valid positions or position 0",
        choices=POOLS,
    )
    fusion_dim: int = hp(
        128, "width of each F_m, inner-modality fusion (msakit's choice)", low=1
    )
    fusion: str = hp(
        "gate", "the fusion network's element-wise weighting: a sigmoid per element (gate) or "
        "one softmax weight per modality (modality)", choices=FUSIONS,
    )
    head_dim: int = hp(
        128, "hidden width of the MLP after the fusion network (msakit's choice)", low=1
    )
    head_dropout: float = hp(0.1, "dropout in that MLP (msakit's choice)", low=0.0, high=1.0)
    modalities: str = hp("tva", "any non-empty subset of t, v, a (Table 4)")
    use_adapters: bool = hp(True, "False: Table 5 'w/o C2' (no A_m)")
    use_pan_knowledge: bool = hp(
        True, "False: Table 5 'w/o C3' (no O_m; the adapters still read the encoders)"
    )
    pretrained_encoders: bool = hp(
        True, "False: the text encoder re-initialised at random (an earlier reading of w/o C3)"
    )
    adapter_lr: float | None = hp(
        5e-5, "lr of adapters trained in stage 2 without --adapters (w/o C1); null: group "
        "'other'", low=1e-300,
    )
    contrastive: bool = hp(True, "False: Table 5 'w/o C4' (no L_con)")
    use_n1: bool = hp(True, "False: Table 5 'w/o N1'")
    lam: float = hp(0.01, "λ: weight of L_con, Eq. (5)", low=0.0)
    temperature: float = hp(0.07, "τ of L_con", low=1e-12)
    external: str = hp(
        "mosei", "the external data set of stage 1 (its metrics are computed as for it)"
    )

    def check_combination(self) -> None:
        try:
            parse_modalities(self.modalities)
        except ValueError as exc:
            raise MsakitError(f"conki {exc}") from None
        if not (self.use_pan_knowledge or self.use_adapters):
            raise MsakitError(
                "conki needs pan-knowledge or adapters (use_pan_knowledge or use_adapters)"
            )
