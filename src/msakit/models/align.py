"""MMSA's ``AlignSubNet`` in ``avg_pool`` mode: audio and vision brought to the text's length.

MMSA aligns unaligned sequences this way (``need_model_aligned``) for the models that read one
audio and one vision frame per token (EF-LSTM, MFN's ``audio_vision="aligned"``, BERT-MAG, MFM)
where no aligned file exists (SIMS) or an unaligned file is read.
"""

from __future__ import annotations

import torch


def mmsa_avg_pool(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, D) -> (B, ``length``, D) as MMSA's ``AlignSubNet("avg_pool")``.

    Unchanged (the same tensor) when T == ``length``. Otherwise the last frame is repeated up
    to p x ``length`` frames (p = ceil(T / ``length``)), viewed as (B, p, ``length``, D), and
    output position j is the mean of frames j, j + ``length``, ..., j + (p - 1) ``length``
    (MMSA's reshape: strided frames, not a window of neighbouring ones)."""
    frames = x.size(1)
    if frames == length:
        return x
    pool = -(-frames // length)  # ceil
    padded = torch.cat([x, x[:, -1:].expand(-1, pool * length - frames, -1)], dim=1)
    return padded.view(x.size(0), pool, length, x.size(2)).mean(dim=1)
