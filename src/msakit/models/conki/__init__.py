"""ConKI: Contrastive Knowledge Injection (Yu et al., Findings of ACL 2023).

One package: its hyperparameters (:mod:`~msakit.models.conki.config`), the model
(:mod:`~msakit.models.conki.model`), its presets (:mod:`~msakit.models.conki.presets`) and its
adapter pretraining stage (:mod:`~msakit.models.conki.adapters`), which the generic trainer
reaches through the ``ModelSpec``. Importing it registers the model.
"""

from msakit.models.conki.adapters import (
    STAGE,
    adapters_file,
    encoder_fingerprint,
    install_adapters,
    read_adapters,
    stage1_config,
)
from msakit.models.conki.config import (
    ADAPTER_LAYERS,
    AV_INSERT,
    FEEDFORWARD_RATIO,
    FUSIONS,
    LETTERS,
    MODALITIES,
    PLOT_NAMES,
    POOLS,
    TEXT_INSERT,
    ConKIConfig,
    insertion_points,
    parse_modalities,
)
from msakit.models.conki.model import (
    Adapter,
    AdapterModule,
    ConKI,
    FusionNetwork,
    single_knowledge_loss,
)
from msakit.models.conki.presets import CONKI_DATASET, CONKI_PRETRAIN, SEARCH_SPACE
from msakit.models.registry import ModelSpec, register_model

SPEC = register_model(
    ModelSpec(
        name="conki",
        title="ConKI",
        paper="Yu et al., Findings of ACL 2023",
        config=ConKIConfig,
        build=ConKI,
        presets=CONKI_DATASET,
        search_space=SEARCH_SPACE,
        adapter_stage=STAGE,
    )
)

__all__ = [
    "ADAPTER_LAYERS", "AV_INSERT", "CONKI_DATASET", "CONKI_PRETRAIN", "FEEDFORWARD_RATIO",
    "FUSIONS", "LETTERS", "MODALITIES", "PLOT_NAMES", "POOLS", "SEARCH_SPACE", "SPEC",
    "TEXT_INSERT", "Adapter", "AdapterModule", "ConKI", "ConKIConfig", "FusionNetwork",
    "adapters_file", "encoder_fingerprint", "insertion_points", "install_adapters",
    "parse_modalities", "read_adapters", "single_knowledge_loss", "stage1_config",
]
