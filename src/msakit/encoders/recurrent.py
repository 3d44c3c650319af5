"""An LSTM sub-network over the valid frames of a padded batch, as MMSA's baselines use it.

Self-MM's ``AuViSubNet`` and MMIM's ``RNNEncoder`` (MMSA) are the same network: an LSTM over the
packed valid frames, one final hidden state, dropout, a Linear layer. They differ only in which
final state they read; ``state`` says which, so both keep their MMSA computation (and parameter
names: ``rnn``, ``out``) with one implementation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = ["FinalStateLSTM", "STATES"]

STATES = ("first", "last")


class FinalStateLSTM(nn.Module):
    """(B, L, d_in), lengths (B,) -> (B, d_out): LSTM, a final hidden state, dropout, Linear.

    ``state="first"``: the first layer's final state, both directions concatenated when
    ``bidirectional`` (MMIM reads ``h_n[0]`` and ``h_n[1]``); ``state="last"``: the last layer's
    (Self-MM). With one unidirectional layer both are the usual last state. Lengths are clamped
    to [1, L]: an empty sequence reads one (zero-padded) frame. The LSTM's dropout between
    layers applies only with more than one layer, as PyTorch requires.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, *, layers: int, dropout: float,
                 bidirectional: bool = False, state: str = "last") -> None:
        super().__init__()
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        if bidirectional and state != "first":
            raise ValueError("a bidirectional LSTM reads the first layer's state (state='first')")
        self.state, self.bidirectional = state, bidirectional
        self.rnn = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear((2 if bidirectional else 1) * hidden, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.detach().to("cpu", torch.int64).clamp(min=1, max=x.size(1))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)  # (layers x directions, B, hidden)
        if self.state == "last":
            h = h_n[-1]
        else:
            h = torch.cat([h_n[0], h_n[1]], dim=-1) if self.bidirectional else h_n[0]
        return self.out(self.dropout(h))
