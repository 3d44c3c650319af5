"""Padding-aware Transformer encoders for audio and vision feature sequences.

Both papers encode audio and vision with a small stack of standard Transformer encoder layers
(CLGSI: 2 layers on the raw feature width, sinusoidal positions, feed-forward 2048, dropout 0.1,
post-norm; ConKI: 2 layers). The authors' CLGSI code runs them over the full padded sequence with
no mask and takes index -1 of the padded output; msakit masks the padding and pools from the
lengths, so a padded frame never changes a result and cost follows the real lengths (batches are
trimmed to their longest valid sequence before they reach the encoder).

Layers are PyTorch's ``nn.TransformerEncoderLayer`` (whose attention calls the fused
``scaled_dot_product_attention``). A sequence of length 0 (no face found) would make every
attention row fully masked, which is NaN in plain PyTorch; we let such a sequence see one frame,
frame 0, whose input is zero (padded frames are zeroed before encoding), so it is encoded as a
single zero frame.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on valid frames [0, length)."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: x (B, L, D), mask (B, L) -> (B, D); an empty row gives zeros."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    total = (x * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp_min(1.0)
    return total / count


def last_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Frame ``length - 1`` of each row: x (B, L, D) -> (B, D); length 0 takes frame 0."""
    index = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, x.size(-1))
    return x.gather(1, index).squeeze(1)


class SinusoidalPositions(nn.Module):
    """Vaswani et al.'s fixed sinusoidal positions, for any (odd or even) feature width."""

    def __init__(self, dim: int, max_len: int = 4096) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> x + positions (B, L, D)."""
        length = x.size(1)
        if length > self.table.size(0):
            self.table = SinusoidalPositions(x.size(-1), 2 * length).table.to(x.device)
        return x + self.table[:length].to(x.dtype)


class PackedEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (post-norm, ReLU) whose feed-forward runs on kept frames.

    Same parameters, names and math as PyTorch's layer: self-attention over the padded batch
    (fused ``scaled_dot_product_attention``, padding masked), then the position-wise feed-forward
    block and ``norm2`` on the kept frames only, packed into one (N, D) matrix. The feed-forward
    is where a CPU step spends its time (D -> 2048 -> D for every frame), so its cost follows the
    real lengths, not the padding. Outputs at kept frames equal the stock layer's; padded frames
    keep the post-attention value, which nothing downstream reads.
    """

    def forward_packed(
        self, x: torch.Tensor, padding: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """x (B, L, D); padding (B, L) True where masked; keep (N,) flat indices of frames."""
        x = self.norm1(x + self._sa_block(x, None, padding))
        flat = x.reshape(-1, x.size(-1))
        kept = flat.index_select(0, keep)  # (N, D)
        kept = self.norm2(kept + self._ff_block(kept))
        return flat.index_copy(0, keep, kept).view_as(x)


class SequenceEncoder(nn.Module):
    """A stack of post-norm Transformer encoder layers over a padded (B, L, D) sequence.

    ``forward(x, lengths)`` returns ``(hidden, mask)`` with hidden (B, L, D) and mask (B, L);
    ``forward(..., return_all=True)`` returns the list of hidden states instead of the last
    (the input to layer k is item k), which ConKI's adapters read.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int = 2,
        feedforward: int = 2048,
        dropout: float = 0.1,
        positional: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide the feature width {dim}")
        self.positions = SinusoidalPositions(dim) if positional else None
        self.layers = nn.ModuleList(
            PackedEncoderLayer(
                dim, heads, dim_feedforward=feedforward, dropout=dropout, batch_first=True
            )
            for _ in range(layers)
        )

    def prepare(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zero the padding, add positions.

        Returns (x, valid mask (B, L), attention padding mask (B, L), kept frame indices (N,)).
        Empty sequences keep frame 0 (a zero frame plus position 0): never NaN.
        """
        mask = lengths_to_mask(lengths, x.size(1))
        x = x * mask.unsqueeze(-1).to(x.dtype)
        if self.positions is not None:
            x = self.positions(x)
        attend = mask.clone()
        attend[:, 0] |= lengths == 0
        keep = attend.flatten().nonzero().squeeze(1)
        return x, mask, ~attend, keep

    def run_layer(
        self, k: int, x: torch.Tensor, padding: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Apply layer ``k``: x (B, L, D), padding (B, L) True where masked, keep (N,)."""
        return self.layers[k].forward_packed(x, padding, keep)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_all: bool = False
    ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
        x, mask, padding, keep = self.prepare(x, lengths)
        states = [x]
        for k in range(len(self.layers)):
            x = self.run_layer(k, x, padding, keep)
            states.append(x)
        return (states if return_all else x), mask
