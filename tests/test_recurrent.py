"""FinalStateLSTM, the LSTM sub-network shared by Self-MM and MMIM (MMSA's AuViSubNet and
RNNEncoder): which final state it reads, valid frames only, empty sequences."""

from __future__ import annotations

import pytest
import torch

from msakit.encoders.recurrent import FinalStateLSTM


def _by_hand(net: FinalStateLSTM, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Each sample alone over its valid frames (at least one), the chosen state, then Linear."""
    rows = []
    for sample, n in zip(x, lengths, strict=True):
        _, (h_n, _) = net.rnn(sample[: max(n, 1)].unsqueeze(0))
        if net.state == "last":
            h = h_n[-1]
        else:
            h = torch.cat([h_n[0], h_n[1]], -1) if net.bidirectional else h_n[0]
        rows.append(net.out(h)[0])
    return torch.stack(rows)


@pytest.mark.parametrize("layers, bidirectional, state", [
    (1, False, "last"), (2, False, "last"), (2, False, "first"), (2, True, "first"),
])
def test_final_state_over_the_valid_frames(layers, bidirectional, state):
    torch.manual_seed(0)
    net = FinalStateLSTM(3, 4, 2, layers=layers, dropout=0.2, bidirectional=bidirectional,
                         state=state).eval()
    x = torch.randn(3, 6, 3)
    lengths = [6, 2, 0]  # the last sample has no valid frame: it reads one (padded) frame
    x[1, 2:] = 99.0  # padding that must not count
    got = net(x, torch.tensor(lengths))
    torch.testing.assert_close(got, _by_hand(net, x, lengths))


def test_first_and_last_layer_states_differ_with_two_layers():
    torch.manual_seed(0)
    last = FinalStateLSTM(3, 4, 2, layers=2, dropout=0.0, state="last")
    first = FinalStateLSTM(3, 4, 2, layers=2, dropout=0.0, state="first")
    first.load_state_dict(last.state_dict())  # same parameter names, same weights
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    assert not torch.allclose(first(x, lengths), last(x, lengths))


def test_a_bidirectional_lstm_must_read_the_first_layer():
    with pytest.raises(ValueError, match="first"):
        FinalStateLSTM(3, 4, 2, layers=1, dropout=0.0, bidirectional=True, state="last")
