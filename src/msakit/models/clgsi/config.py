"""CLGSI's hyperparameters (:class:`CLGSIConfig`): defaults are the paper's MOSI values; the
switches of the authors' released code are documented in :mod:`msakit.models.clgsi.readings`."""

from __future__ import annotations

from dataclasses import dataclass

from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError

FUSIONS = ("glfk", "add", "concat", "gk", "lfk", "transformer", "none")
COMMON_FRAMES = ("last_valid", "last_padded")
SUBNET_POOLS = ("valid", "padded")
# What `msakit plot tsne` draws: the common space (what L_cl compares), or without common
# features the specific ones.
PLOT_COMMON = {"text": "T (common)", "audio": "A (common)", "vision": "V (common)"}
PLOT_SPECIFIC = {
    "specific_text": "T (specific)", "specific_audio": "A (specific)",
    "specific_vision": "V (specific)",
}


@dataclass
class CLGSIConfig(ModelConfig, model="clgsi"):
    """CLGSI's hyperparameters. Defaults: the paper's MOSI setting (Table 7), completed from the
    authors' released config where the paper is silent; per-dataset values are the presets
    (:mod:`msakit.models.clgsi.presets`). Values the paper and the config both leave open are
    msakit's choice (docs/readings.md)."""

    common_dim: int = hp(64, "d_c: width of T_c, A_c, V_c and of GLFK's output (Table 7)", low=1)
    specific_dim: int = hp(64, "d_s: width of each Subnet's output (Table 7)", low=1)
    head_dim: int = hp(
        128, "d_f: the head's width (authors' post_fusion_dim: in -> 3d_f -> 2d_f -> 1)", low=1
    )
    audio_heads: int = hp(1, "attention heads of the audio encoder (authors' config)", low=1)
    vision_heads: int = hp(4, "attention heads of the vision encoder (authors' config)", low=1)
    audio_layers: int = hp(2, "layers of the audio Transformer encoder", low=1)
    vision_layers: int = hp(2, "layers of the vision Transformer encoder", low=1)
    feedforward: int = hp(2048, "feed-forward width of the audio/vision encoders", low=1)
    encoder_dropout: float = hp(0.1, "dropout in the audio/vision encoders", low=0.0, high=1.0)
    projection_dropout: float = hp(
        0.05, "dropout before the FC of T_c, A_c, V_c", low=0.0, high=1.0
    )
    head_dropout: float = hp(0.2, "dropout at the head's input", low=0.0, high=1.0)
    subnet_reduction: int = hp(
        8, "r: a Subnet's d_m -> d_m/r bottleneck (Sec. 3.3: 8; authors' MOSI config: 2)", low=1
    )
    encoder_mask: bool = hp(
        True, "False: audio/vision encoders attend to every padded frame (authors' code)"
    )
    common_frame: str = hp(
        "last_valid", "A_c/V_c from the last valid frame or index -1 of the padded output",
        choices=COMMON_FRAMES,
    )
    subnet_pool: str = hp(
        "valid", "Subnet GAP over valid positions or every padded one (authors' code)",
        choices=SUBNET_POOLS,
    )
    clone_encoder_layers: bool = hp(
        False, "True: encoder layers start from one layer's weights (authors' code)"
    )
    fusion: str = hp(
        "glfk", "fusion of the common features: GLFK or an ablation of Tables 4 and 8 (none: "
        "no F_k in the head)", choices=FUSIONS,
    )
    fusion_layers: int = hp(2, "layers of the transformer fusion (Table 8)", low=1)
    fusion_heads: int = hp(8, "heads of the transformer fusion (Appendix D)", low=1)
    beta: int = hp(16, "GLFK's channel expansion (Local beta/2, Fine beta)", low=2)
    use_common: bool = hp(
        True, "False: Table 5 'w/o Con' (no T_c/A_c/V_c, no fusion, no L_cl)"
    )
    use_specific: bool = hp(True, "False: Table 5 'w/o Spe' (no Subnets)")
    contrastive: bool = hp(True, "False: Table 3 'w/o CL' (no L_cl)")
    weighted: bool = hp(True, "False: Table 3 'w/o Weight' (unweighted L_cl)")
    variant: str = hp(
        "paper", "the contrastive loss: Sec. 3.4 (paper) or the released code (official); "
        "either maps labels with label_scale", choices=("paper", "official"),
    )
    gamma: float = hp(0.05, "γ: weight of L_cl (paper variant: msakit's sweep)", low=0.0)
    threshold: float = hp(0.4, "the weight function's threshold (Sec. 3.4)", low=0.0)
    gain: float = hp(1.5, "the weight function's gain (Sec. 3.4)", low=0.0)
    temperature: float = hp(0.1, "τ of L_cl", low=1e-12)
    label_scale: float = hp(
        3.0, "H: labels / H map to [-1, 1] in L_cl, under both variants (paper presets: the "
        "data set's H; --preset authors: 3, on simsv2 1, as the released code)", low=1e-12
    )

    def check_combination(self) -> None:
        if not (self.use_specific or (self.use_common and self.fusion != "none")):
            raise MsakitError("clgsi: the head needs common or specific features (or both)")
