"""CLGSI: Contrastive Learning Guided by Sentiment Intensity (Yang et al., NAACL Findings 2024).

One package: its hyperparameters (:mod:`~msakit.models.clgsi.config`), the model
(:mod:`~msakit.models.clgsi.model`), its presets (:mod:`~msakit.models.clgsi.presets`), the table
of where the paper and the authors' code differ (:mod:`~msakit.models.clgsi.readings`), and its
weight-function figure (:mod:`~msakit.models.clgsi.plots`). Importing it registers the model.
"""

from msakit.models.clgsi.config import (
    COMMON_FRAMES,
    FUSIONS,
    PLOT_COMMON,
    PLOT_SPECIFIC,
    SUBNET_POOLS,
    CLGSIConfig,
)
from msakit.models.clgsi.model import (
    CLGSI,
    GLFK,
    LOSSES,
    CommonFusion,
    Head,
    Projection,
    Subnet,
    TransformerFusion,
)
from msakit.models.clgsi.plots import WEIGHTS_PLOT
from msakit.models.clgsi.presets import CLGSI_AUTHORS, CLGSI_DATASET, SEARCH_SPACE
from msakit.models.registry import ModelSpec, register_model

SPEC = register_model(
    ModelSpec(
        name="clgsi",
        title="CLGSI",
        paper="Yang et al., Findings of NAACL 2024",
        config=CLGSIConfig,
        build=CLGSI,
        presets=CLGSI_DATASET,
        named_presets={"authors": CLGSI_AUTHORS},
        search_space=SEARCH_SPACE,
        plots={"weights": WEIGHTS_PLOT},
    )
)

__all__ = [
    "CLGSI", "CLGSIConfig", "CLGSI_AUTHORS", "CLGSI_DATASET", "COMMON_FRAMES", "FUSIONS", "GLFK",
    "LOSSES", "PLOT_COMMON", "PLOT_SPECIFIC", "SEARCH_SPACE", "SPEC", "SUBNET_POOLS",
    "CommonFusion", "Head", "Projection", "Subnet", "TransformerFusion",
]
