"""Padding-free layout of a padded batch: valid frames packed into one (N, D) matrix.

Position-wise work (linear projections, feed-forward blocks, LayerNorms, dropout) runs on the
packed rows, so it costs the sum of the samples' lengths, not batch size times the longest.
Attention is the one step that mixes frames; it runs per *length group*: the batch's samples
sorted by length and cut into groups of similar length, each group padded to its own longest
sample (:func:`grouped_attention`), so its cost is about the sum of the squared lengths. Inside a
group the padding is masked exactly as in the padded batch, so every valid frame sees the same
keys as before and gets the same value (up to float rounding), with the same masks.

The packed order is the group order: samples by decreasing length (ties in batch order), each
sample's valid frames in their order. :attr:`PackedLayout.keep` maps packed rows back to the flat
(B * L) positions of the padded batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

GROUP_OVERHEAD = 60_000
"""The fixed cost of one more attention group, in attention-score elements (per head): a
group's few extra operator calls (gather, two matmuls, softmax, dropout, their backward) cost
about as much as that many scores on a CPU. Larger values give fewer, more padded groups."""


@dataclass(frozen=True)
class Group:
    """One length group: packed rows [start, stop), ``rows`` samples padded to ``length``.

    ``gather`` (rows * length,) picks each padded position's packed row (inside the slice;
    padded positions repeat their sample's last frame, masked as keys), ``padding``
    (rows, length) is True at those positions and ``valid`` (stop - start,) lists the real
    positions of the flattened (rows * length) layout. All three are None when every sample of
    the group has the same length (the slice is then a plain view)."""

    start: int
    stop: int
    rows: int
    length: int
    gather: torch.Tensor | None
    padding: torch.Tensor | None
    valid: torch.Tensor | None


@dataclass(frozen=True)
class PackedLayout:
    """Where the valid frames of a padded (B, L) batch sit in the packed (N, D) rows."""

    keep: torch.Tensor  # (N,) flat indices into B * L, in packed (group) order
    groups: tuple[Group, ...]
    batch: int
    length: int

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """Padded x (B, L, D) -> packed rows (N, D)."""
        return x.reshape(-1, x.size(-1)).index_select(0, self.keep)

    def unpack(self, rows: torch.Tensor, into: torch.Tensor | None = None) -> torch.Tensor:
        """Packed rows (N, D) -> padded (B, L, D): padded frames from ``into`` (or zeros)."""
        dim = rows.size(-1)
        if into is None:
            flat = rows.new_zeros(self.batch * self.length, dim)
        else:
            flat = into.reshape(-1, dim)
        return flat.index_copy(0, self.keep, rows).view(self.batch, self.length, dim)


def _cut(lengths: list[int], heads: int) -> list[int]:
    """Group sizes for lengths sorted in decreasing order: the cut minimising the attention
    cost, sum over groups of heads * rows * longest^2 + :data:`GROUP_OVERHEAD` (exact dynamic
    programme over the sorted order, O(B^2))."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j samples
    size = [0] * (n + 1)
    for stop in range(1, n + 1):
        for start in range(stop):
            cost = best[start] + heads * (stop - start) * lengths[start] ** 2 + GROUP_OVERHEAD
            if cost < best[stop]:
                best[stop], size[stop] = cost, stop - start
    sizes, j = [], n
    while j:
        sizes.append(size[j])
        j -= size[j]
    return sizes[::-1]


def _group(start: int, lengths: list[int]) -> Group:
    rows, longest = len(lengths), lengths[0]
    stop = start + sum(lengths)
    if all(n == longest for n in lengths):
        return Group(start, stop, rows, longest, None, None, None)
    counts = torch.tensor(lengths)
    offsets = torch.cumsum(counts, 0) - counts  # each sample's first row inside the slice
    steps = torch.arange(longest)
    padding = steps.unsqueeze(0) >= counts.unsqueeze(1)  # (rows, longest)
    gather = offsets.unsqueeze(1) + torch.minimum(steps.unsqueeze(0), counts.unsqueeze(1) - 1)
    valid = (~padding).flatten().nonzero().squeeze(1)
    return Group(start, stop, rows, longest, gather.flatten(), padding, valid)


def pack_layout(padding: torch.Tensor, heads: int = 1) -> PackedLayout:
    """The layout of the frames not masked by ``padding`` (B, L), True where masked.

    Every sample needs at least one valid frame (msakit's encoders give an empty sequence its
    frame 0). ``heads`` weighs attention's cost against the per-group overhead."""
    batch, length = padding.shape
    valid = ~padding.cpu()
    counts = valid.sum(1)
    if bool((counts == 0).any()):
        raise ValueError("every sequence needs a valid frame to be packed")
    order = torch.argsort(counts, descending=True, stable=True)
    cells = valid[order].nonzero()  # (N, 2): row in sorted order, position; row-major
    keep = order[cells[:, 0]] * length + cells[:, 1]
    sorted_counts = counts[order].tolist()
    groups, start, first = [], 0, 0
    for size in _cut(sorted_counts, heads):
        group = _group(start, sorted_counts[first : first + size])
        groups.append(group)
        start, first = group.stop, first + size
    return PackedLayout(keep.to(padding.device), tuple(groups), batch, length)


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def grouped_attention(
    qkv: torch.Tensor, layout: PackedLayout, heads: int, attend: Attend
) -> torch.Tensor:
    """Multi-head self-attention over packed rows, one length group at a time.

    ``qkv`` (N, 3 * D) holds each row's query, key and value (in that order, heads contiguous,
    as ``nn.MultiheadAttention``'s and BERT's projections give them); ``attend(q, k, v,
    padding)`` computes attention on (g, H, Lg, E) tensors with a (g, Lg) key padding mask (or
    None). Returns the heads' outputs concatenated per row, (N, D)."""
    dim = qkv.size(-1) // 3
    head_dim = dim // heads
    outputs = []
    for g in layout.groups:
        part = qkv[g.start : g.stop]
        if g.gather is not None:
            part = part.index_select(0, g.gather.to(qkv.device))
        q, k, v = part.view(g.rows, g.length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        padding = None if g.padding is None else g.padding.to(qkv.device)
        out = attend(q, k, v, padding).transpose(1, 2).reshape(g.rows * g.length, dim)
        if g.valid is not None:
            out = out.index_select(0, g.valid.to(qkv.device))
        outputs.append(out)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
