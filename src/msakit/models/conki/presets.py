"""ConKI's presets: the paper's settings per data set (Appendix B), its adapter pretraining
stage's run settings and ``msakit tune``'s search space."""

from __future__ import annotations

from typing import Any

from msakit.config import groups

# Appendix B: fine-tuning batch 32, up to 200 epochs, lrs 5e-6 encoders / 1e-6 others with weight
# decay 1e-3 on MOSI and SIMS; 5e-6 text / 5e-5 others on MOSEI; τ 0.07; λ 0.01 or 0.001; the
# adapter pretraining stage (10 epochs, lr 5e-5, one epoch of linear warm-up). ConKI uses the
# uncased 12-layer BERT everywhere and reads SIMS in English translation (Appendix C), so its
# SIMS preset names bert-base-uncased; the standard SIMS file (Chinese ids) is refused by the
# vocabulary check until ``msakit retokenize --texts`` gives it the English texts' ids.


# Appendix B: batch 32, up to 200 epochs; lrs "for encoders and other components" 5e-6 / 1e-6
# with weight decay 1e-3 on MOSI and SIMS, 5e-6 text / 5e-5 others on MOSEI. The paper names
# no fine-tuning schedule: constant learning rates (msakit's choice). Early stopping (20 epochs
# without a better validation MAE) is msakit's choice; the paper trains 200 epochs and tests the
# best validation epoch (--set early_stop=200). The paper gives no weight decay for MOSEI:
# 1e-3 as on MOSI/SIMS is msakit's choice.
_CONKI_RUN = {
    "text_encoder": "bert-base-uncased",  # Appendix B; SIMS in English translation (Appendix C)
    "batch_size": 32,
    "epochs": 200,
    "early_stop": 20,
    "warmup": 0.0,
    "schedule": "constant",
    "weight_decay": groups(text=1e-3, audio=1e-3, vision=1e-3, other=1e-3),
}

CONKI_DATASET: dict[str, dict[str, Any]] = {  # registry.PresetEntry by data set
    "mosi": {
        "run": {**_CONKI_RUN, "lr": groups(text=5e-6, audio=5e-6, vision=5e-6, other=1e-6)},
        "model": {"external": "mosei", "lam": 0.01},
    },
    "mosei": {
        "run": {**_CONKI_RUN, "lr": groups(text=5e-6, audio=5e-5, vision=5e-5, other=5e-5)},
        "model": {"external": "mosi", "lam": 0.001},
    },
    "sims": {
        "run": {**_CONKI_RUN, "lr": groups(text=5e-6, audio=5e-6, vision=5e-6, other=1e-6)},
        "model": {"external": "mosei", "lam": 0.01},
    },
}

# Stage 1 of ConKI (Appendix B, Algorithm 1): adapters + fusion + head on the external data set
# with the encoders frozen and the task loss only; 10 epochs, lr 5e-5, one epoch of linear
# warm-up (then linear decay), the best validation epoch kept. Other run settings (batch...)
# come from the target's preset.
CONKI_PRETRAIN: dict[str, Any] = {
    "epochs": 10,
    "lr": groups(text=5e-5, audio=5e-5, vision=5e-5, other=5e-5),
    "weight_decay": groups(text=0.0, audio=0.0, vision=0.0, other=0.0),
    "warmup_epochs": 1,
    "schedule": "linear",
}

SEARCH_SPACE = {
    "lr.text": ("float", 1e-6, 5e-5, True),
    "lr.other": ("float", 1e-6, 1e-4, True),
    "lam": ("float", 1e-4, 1e-1, True),
    "temperature": ("float", 0.03, 0.3, True),
    "adapter_dropout": ("float", 0.0, 0.3, False),
    "head_dropout": ("float", 0.0, 0.5, False),
}
