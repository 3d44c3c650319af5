"""The authors' released CLGSI code as overrides of msakit's paper presets.

``CLGSI_AUTHORS[dataset]`` holds ``{"run": {...}, "model": {...}}``: the RunConfig fields and the
model keys (``msakit.config.presets.CLGSI_MODEL``) whose values in AZYoung233/CLGSI
(``config/config_regression.py``, ``run.py``, ``data/load_data.py``, ``models/``,
``trains/multiTask/CLGSI.py``) differ from the paper preset of that dataset. Applied on top of
``preset("clgsi", dataset)``, they give the authors' computation; every difference, with the
paper's value and the authors', is tabulated in ``docs/readings.md`` ("CLGSI: paper vs the
authors' code"). Run values are whole field values (``lr`` is the full per-group dict).

Not expressible here: their text encoder is ``bert-base-uncased`` (MOSI, MOSEI) or
``bert-base-chinese`` (SIMS), which ``--text-encoder`` names; their initial weights come from
another random stream (``msakit import-weights`` loads their trained weights instead).
"""

from __future__ import annotations

from typing import Any

# The released code's model computation, the same on every dataset.
_MODEL = {
    "encoder_mask": False,  # AuVi_Encoder: nn.TransformerEncoder without a padding mask
    "common_frame": "last_padded",  # audio[:, -1, :] / video[:, -1, :]
    "subnet_pool": "padded",  # unimodal_skip_net: AdaptiveAvgPool2d over every position
    "clone_encoder_layers": True,  # nn.TransformerEncoder deep-copies one encoder layer
    "variant": "official",  # models/contrastive_loss.py
    "label_scale": 3.0,  # ((y + 3) / 3) - 1 for every dataset name but 'simsv2'
    "temperature": 0.03,  # contrastive_loss's temperature
}

_RUN = {
    "sampler": "random",  # DataLoader(shuffle=True)
    "seeds": [2222, 3333, 4444],  # run.py
    "fractional_warmup": True,  # num_warmup_steps=0.1*total_steps, a float
    "stop_at_horizon": False,  # `while True` until early stopping; warm_up_epochs = horizon
}

CLGSI_AUTHORS: dict[str, dict[str, dict[str, Any]]] = {
    "mosi": {
        # learning_rate_audio 5e-3, learning_rate_video 1e-3 (Table 7 swaps them)
        "run": {**_RUN, "lr": {"text": 5e-5, "audio": 5e-3, "vision": 1e-3, "other": 1e-2}},
        "model": {**_MODEL, "gamma": 0.95},  # config_regression.py: weight of the CL term
    },
    "mosei": {
        "run": dict(_RUN),
        "model": {**_MODEL, "gamma": 0.48},
    },
    "sims": {
        "run": dict(_RUN),
        # post_text_dim = post_audio_dim = post_video_dim = 128 (Table 7: d_c = d_s = 64); the
        # Subnets' output width is post_text_dim too
        "model": {**_MODEL, "common_dim": 128, "specific_dim": 128, "gamma": 0.38},
    },
}

