"""Padding-aware Transformer encoders for audio and vision feature sequences.

Both papers encode audio and vision with a small stack of standard Transformer encoder layers
(CLGSI: 2 layers on the raw feature width, sinusoidal positions, feed-forward 2048, dropout 0.1,
post-norm; ConKI: 2 layers). The authors' CLGSI code runs them over the full padded sequence with
no mask and takes index -1 of the padded output; msakit masks the padding and pools from the
lengths, so a padded frame never changes a result and cost follows the real lengths (batches are
trimmed to their longest valid sequence before they reach the encoder). CLGSI's
``encoder_mask=False`` switch reproduces the authors' computation by passing the full padded
length as every sequence's length.

Layers are PyTorch's ``nn.TransformerEncoderLayer`` (same parameters and math), run
padding-free: every position-wise step on the valid frames packed into one (N, D) matrix,
attention per group of samples of similar length (:mod:`msakit.encoders.packing`), the
feed-forward block as one autograd function (ReLU and dropout in one in-place pass,
:func:`feed_forward`), attention through the fused
``scaled_dot_product_attention`` when there is no dropout, and, when the Trainer turns
``fast_dropout`` on, dropout masks drawn by NumPy (:class:`PackedEncoderLayer`,
:mod:`msakit.encoders.dropout`). A sequence of length 0 (no
face found) would make every attention row fully masked, which is NaN in plain PyTorch; we let
such a sequence see one frame, frame 0, whose input is zero (padded frames are zeroed before
encoding), so it is encoded as a single zero frame.
"""

from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
from torch import nn
from torch.nn import functional as F

from msakit.encoders.dispatch import attention_kernel, packed_feed_forward
from msakit.encoders.dropout import fast_dropout, relu_dropout_
from msakit.encoders.packing import PackedLayout, grouped_attention, pack_layout
from msakit.encoders.threads import on_parts, row_parts


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

    table: torch.Tensor  # a buffer

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


class _FeedForward(torch.autograd.Function):
    """linear2(dropout(relu(linear1(x)))) in one function, for (N, D) float32 CPU inputs.

    The hidden (N, F) activation is written once by the first matmul, then ReLU and dropout
    happen in place (with ``fast``, in one pass with a NumPy-drawn mask:
    :func:`~msakit.encoders.dropout.relu_dropout_`; otherwise with PyTorch's Bernoulli mask); the
    dropout scale 1 / (1 - p) is applied to the small (N, D) and (F, D) products instead of the
    (N, F) one (the same math, rounded in another order). Backward keeps only the masked
    activation, which the second linear needs anyway: it is positive exactly where the unit is
    active and kept, so it also gives ReLU's gradient and dropout's mask.

    ``apply(x, w1, b1, w2, b2, setting)`` with ``setting`` a :class:`_Dropout` (autograd's
    ``apply`` takes positional arguments only, hence the ``*params`` of ``forward``).
    """

    @staticmethod
    def forward(ctx, x, *params):
        w1, b1, w2, b2, setting = params
        p, fast = setting
        hidden = x.new_empty(x.size(0), w1.size(0))
        parts = row_parts(x.size(0))
        rows = cache_rows(BACKWARD_BLOCK, w1.size(0))

        def first(part: slice) -> None:  # the bias and the product in cache, then out
            for start in range(part.start, part.stop, rows):
                end = min(start + rows, part.stop)
                torch.addmm(b1, x[start:end], w1.t(), out=hidden[start:end])

        on_parts(first, parts)
        if p > 0.0 and fast:
            scale = relu_dropout_(hidden, p)
        elif p > 0.0:
            hidden.relu_().mul_(torch.empty_like(hidden).bernoulli_(1.0 - p))
            scale = 1.0 / (1.0 - p)
        else:
            hidden.relu_()
            scale = 1.0
        out = x.new_empty(x.size(0), w2.size(0))
        on_parts(lambda part: torch.addmm(b2, hidden[part], w2.t(), alpha=scale, out=out[part]),
                 parts)
        ctx.save_for_backward(x, w1, w2, hidden)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w1, w2, hidden = ctx.saved_tensors
        scale = ctx.scale
        need = ctx.needs_input_grad
        g_x, g_w1t, g_b1, g_w2 = _feed_forward_backward(x, w1, w2, hidden=hidden,
                                                       grad=grad.contiguous())
        g_b2 = grad.sum(0) if need[4] else None
        return (g_x.mul_(scale) if need[0] else None,
                g_w1t.t().mul_(scale) if need[1] else None,
                g_b1.mul_(scale) if need[2] else None,
                g_w2.mul_(scale) if need[3] else None, g_b2, None)


BACKWARD_BLOCK = 1 << 17
"""Hidden values per block of :func:`_feed_forward_backward` (512 KiB of float32, 64 rows of a
2048-wide block), as :data:`INFERENCE_BLOCK`."""


def _feed_forward_backward(x, w1, w2, *, hidden, grad):
    """The unscaled gradients of :class:`_FeedForward` (x, w1 transposed, b1, w2), a block of
    rows at a time: each block's hidden gradient (rows, F) is made, masked by the saved
    activation and used for x's, w1's and b1's gradients while it is in cache, and the saved
    activation is read once; before, the (N, F) hidden gradient was written to memory and read
    back three times. On several threads, each row part (:func:`~msakit.encoders.threads.
    row_parts`) runs its blocks on its own thread and the parts' weight gradients are added in
    part order. The weight gradients are sums over blocks (another summation order than one
    matmul over all rows: the same to float rounding)."""
    g_x = torch.empty_like(x)
    rows = cache_rows(BACKWARD_BLOCK, hidden.size(1))

    def part_gradients(part: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g_w1t = x.new_zeros(x.size(1), hidden.size(1))  # (D, F): (x^T g_hidden), the fast layout
        g_b1 = x.new_zeros(hidden.size(1))
        g_w2 = x.new_zeros(grad.size(1), hidden.size(1))
        for start in range(part.start, part.stop, rows):
            end = min(start + rows, part.stop)
            h, g = hidden[start:end], grad[start:end]
            g_w2.addmm_(g.t(), h)
            g_h = g.mm(w2)
            torch.ops.aten.threshold_backward.grad_input(g_h, h, 0.0, grad_input=g_h)
            torch.mm(g_h, w1, out=g_x[start:end])
            # (x^T g_hidden), not g_hidden^T x: with a narrow x (MOSI's 5 audio features) the
            # latter's transposed (F, N) operand makes the matmul 10x slower on CPUs.
            g_w1t.addmm_(x[start:end].t(), g_h)
            g_b1.add_(g_h.sum(0))
        return g_w1t, g_b1, g_w2

    first, *rest = on_parts(part_gradients, row_parts(x.size(0)))
    for more in rest:
        for total, part in zip(first, more, strict=True):
            total.add_(part)
    g_w1t, g_b1, g_w2 = first
    return g_x, g_w1t, g_b1, g_w2


class _Dropout(NamedTuple):
    p: float
    fast: bool


def feed_forward(
    x: torch.Tensor, linear1: nn.Linear, linear2: nn.Linear, *, p: float, training: bool,
    fast: bool = False,
) -> torch.Tensor:
    """The Transformer feed-forward block linear2(dropout_p(relu(linear1(x)))), x (N, D).

    On CPUs in float32 this is :class:`_FeedForward` (``fast``: its dropout mask drawn by
    NumPy); elsewhere (GPUs, autocast) the stock composition of PyTorch ops.
    """
    if not packed_feed_forward(x.device.type, x.dtype, torch.is_autocast_enabled("cpu")):
        return linear2(F.dropout(F.relu(linear1(x)), p, training))
    if (not training or p == 0.0) and not records_graph(x, linear1, linear2):
        return feed_forward_rows(x, linear1, linear2)
    setting = _Dropout(p if training else 0.0, fast)
    return _FeedForward.apply(x, linear1.weight, linear1.bias, linear2.weight, linear2.bias,
                              setting)


INFERENCE_BLOCK = 1 << 17
"""Hidden values per block of :func:`feed_forward_rows` (512 KiB of float32: 64 rows of a
2048-wide feed-forward), about what one core's L2 cache holds: the block is written by the
first matmul and read by the second without reaching memory. (Measured on 2 EPYC cores, 1
thread: 64-row blocks 3.4x faster than the whole (N, 2048) activation for 5 input features,
3.2x for 20; 1024-row blocks 1.3x and 1.6x.)"""


def cache_rows(block: int, width: int) -> int:
    """Rows per cache-sized block of ``block`` values of a ``width``-wide activation, for one
    thread (at least 16)."""
    return max(16, block // width)


def block_rows(block: int, width: int, rows: int) -> int:
    """:func:`cache_rows` on one thread; with more threads all ``rows`` at once (one block).
    Each block's small matmuls are an OpenMP parallel region: on 2 threads of a loaded 2-core
    machine, hundreds of them per layer made prediction 2-3x slower (every barrier waits for a
    descheduled thread). The audio/vision feed-forward block instead cuts its rows into one part
    per thread, each blocked on its own thread (:mod:`msakit.encoders.threads`); the text
    encoder's (compute-bound) intermediate layer takes this rule."""
    if torch.get_num_threads() > 1:
        return max(rows, 1)
    return cache_rows(block, width)


def records_graph(x: torch.Tensor, *modules: nn.Module) -> bool:
    """Whether autograd records this computation (a gradient may be asked for)."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for m in modules for p in m.parameters())


def feed_forward_rows(
    x: torch.Tensor, linear1: nn.Linear, linear2: nn.Linear, block: int = INFERENCE_BLOCK
) -> torch.Tensor:
    """linear2(relu(linear1(x))) for x (N, D) without autograd (prediction), a block of rows
    at a time (``block`` hidden values): each hidden block stays in cache between the two
    matmuls instead of an (N, F) activation written to memory and read back (the block is
    memory-bound: MOSI's audio is 5 features wide, F = 2048); on several threads, one row part
    per thread (:mod:`msakit.encoders.threads`). Each row's result is computed from that row
    alone, as in the unblocked product."""
    rows = cache_rows(block, linear1.out_features)
    out = x.new_empty(x.size(0), linear2.out_features)
    w1, w2 = linear1.weight.t(), linear2.weight.t()

    def blocks(part: slice) -> None:
        for start in range(part.start, part.stop, rows):
            end = min(start + rows, part.stop)
            hidden = torch.addmm(linear1.bias, x[start:end], w1).relu_()
            torch.addmm(linear2.bias, hidden, w2, out=out[start:end])

    on_parts(blocks, row_parts(x.size(0)))
    return out


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: torch.Tensor | None, *,
    p: float, unfused: bool = False, fast: bool = False, dropout: nn.Module | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(E) masked) with dropout p, times v: (B, H, L, E) -> (B, H, L, E).

    ``padding`` (B, L) is True at masked keys (None: nothing masked). Without dropout, and on
    GPUs with dropout too, this is PyTorch's fused ``scaled_dot_product_attention``
    (:func:`msakit.encoders.dispatch.attention_kernel`); with dropout on a CPU (which the fused
    kernels do not support) the same math is written out, the attention weights dropped by
    ``dropout`` (a module, e.g. BERT's), or by ``F.dropout`` or, with ``fast``,
    :func:`fast_dropout`.
    """
    if attention_kernel(q.device.type, p, unfused) == "fused":
        mask = None if padding is None else ~padding[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-1, -2))  # (B, H, L, L)
    if padding is not None:  # an additive (B, 1, 1, L) bias of -inf, added in place
        bias = torch.zeros(padding.shape, dtype=q.dtype, device=q.device)
        scores = scores.add_(bias.masked_fill_(padding, float("-inf"))[:, None, None, :])
    weights = torch.softmax(scores, dim=-1)
    if dropout is not None:
        weights = dropout(weights)
    elif p > 0.0:
        weights = fast_dropout(weights, p) if fast else F.dropout(weights, p, training=True)
    return torch.matmul(weights, v)


class PackedEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (post-norm, ReLU) with a padding-free path.

    The layer IS PyTorch's layer: same parameters and names, and it overrides none of its
    methods, so the inherited ``forward`` (and ``nn.TransformerEncoder`` around it) is the stock
    computation on the same weights. msakit's encoders call :meth:`forward_rows` (or
    :meth:`forward_packed` on a padded batch) instead: every position-wise step (the in- and
    out-projections, dropout, both LayerNorms, the feed-forward block) runs on the valid frames
    packed into one (N, D) matrix, and self-attention per length group
    (:func:`~msakit.encoders.packing.grouped_attention`), so a batch costs about the sum of its
    samples' lengths (squared for attention), not batch size times its longest sample. Outputs
    at valid frames equal the stock layer's with the same key padding mask. The feed-forward
    block is :func:`feed_forward` (ReLU and its dropout in one pass).

    ``fast_dropout`` (False unless :func:`~msakit.encoders.dropout.use_fast_dropout` turns it
    on) makes the packed path draw its feed-forward and attention dropout masks with NumPy; the
    layer's dropout modules are switched by the same call. The packed path needs ReLU, post-norm
    and ``batch_first``; other layers take the stock ``forward`` there too.
    """

    fast_dropout: bool = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fast_dropout = False

    def _packable(self) -> bool:
        return self.activation is F.relu and not self.norm_first and self.self_attn.batch_first

    def _attend(self, q, k, v, padding):
        p = self.self_attn.dropout if self.training else 0.0
        return attend(q, k, v, padding, p=p, fast=self.fast_dropout)

    def _attention(self, x: torch.Tensor, layout: PackedLayout | None, padding) -> torch.Tensor:
        """``nn.MultiheadAttention``'s math with its own parameters (in_proj, out_proj): over
        packed rows x (N, D) per length group, or (``layout`` None) over a padded x (B, L, D)
        with ``padding`` (B, L) True where masked."""
        mha = self.self_attn
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        if layout is not None:
            out = grouped_attention(qkv, layout, mha.num_heads, self._attend)
        else:
            batch, length, dim = x.shape
            q, k, v = qkv.view(batch, length, 3, mha.num_heads, -1).permute(2, 0, 3, 1, 4)
            out = self._attend(q, k, v, padding).transpose(1, 2).reshape(batch, length, dim)
        return self.dropout1(mha.out_proj(out))

    def _position_wise(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + attended)
        out = feed_forward(x, self.linear1, self.linear2, p=self.dropout.p,
                           training=self.training, fast=self.fast_dropout)
        return self.norm2(x + self.dropout2(out))

    def forward_rows(self, rows: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """Packed rows (N, D) of ``layout`` -> the layer's output rows (N, D)."""
        return self._position_wise(rows, self._attention(rows, layout, None))

    def forward_packed(
        self, x: torch.Tensor, padding: torch.Tensor, layout: PackedLayout | None
    ) -> torch.Tensor:
        """x (B, L, D), padding (B, L) True where masked -> (B, L, D).

        With a ``layout`` (of ``padding``) only valid frames are computed; padded frames keep
        their input. ``layout=None`` computes every frame, padded ones attending to the valid
        ones only (for readers of padded outputs)."""
        if padding.dtype != torch.bool:  # a float mask (-inf where masked)
            padding = padding != 0
        if not self._packable():
            return self(x, src_key_padding_mask=padding)
        if layout is not None:
            return layout.unpack(self.forward_rows(layout.pack(x), layout), into=x)
        flat = x.reshape(-1, x.size(-1))
        attended = self._attention(x, None, padding).reshape_as(flat)
        return self._position_wise(flat, attended).view_as(x)


class SequenceEncoder(nn.Module):
    """A stack of post-norm Transformer encoder layers over a padded (B, L, D) sequence.

    ``forward(x, lengths)`` returns ``(hidden, mask)`` with hidden (B, L, D) and mask (B, L);
    the layers run padding-free on the packed valid frames, and padded frames of ``hidden`` are
    zero unless ``full_output=True`` (every frame computed, attending to the valid ones).
    ConKI's adapters read the hidden state before each layer through :meth:`prepare` and
    :meth:`run_layer`.
    """

    def __init__(
        self, dim: int, heads: int, *, layers: int = 2, feedforward: int = 2048,
        dropout: float = 0.1, positional: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide the feature width {dim}")
        self.heads = heads
        self.positions = SinusoidalPositions(dim) if positional else None
        self.layers = nn.ModuleList(
            PackedEncoderLayer(
                dim, heads, dim_feedforward=feedforward, dropout=dropout, batch_first=True
            )
            for _ in range(layers)
        )

    def clone_first_layer(self) -> None:
        """Give every layer the initial weights of layer 0, as ``nn.TransformerEncoder`` does
        (it deep-copies one layer); the layers are trained independently afterwards."""
        for layer in self.layers[1:]:
            layer.load_state_dict(self.layers[0].state_dict())

    def prepare(
        self, x: torch.Tensor, lengths: torch.Tensor, full_output: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PackedLayout | None]:
        """Zero the padding, add positions.

        Returns (x, valid mask (B, L), attention padding mask (B, L), the packed layout of the
        attended frames, or None with ``full_output``). Empty sequences attend to frame 0 (a
        zero frame plus position 0): never NaN. With ``full_output`` every frame is computed
        (padded frames get the whole layer too, still attending to valid frames only), for
        readers of padded outputs.
        """
        mask = lengths_to_mask(lengths, x.size(1))
        x = x * mask.unsqueeze(-1).to(x.dtype)
        if self.positions is not None:
            x = self.positions(x)
        attend_to = mask.clone()
        attend_to[:, 0] |= lengths == 0
        layout = None if full_output else pack_layout(~attend_to, self.heads)
        return x, mask, ~attend_to, layout

    def run_layer(
        self, k: int, x: torch.Tensor, padding: torch.Tensor, layout: PackedLayout | None
    ) -> torch.Tensor:
        """Apply layer ``k``: x (B, L, D), padding (B, L) True where masked (see
        :meth:`PackedEncoderLayer.forward_packed`)."""
        return cast(PackedEncoderLayer, self.layers[k]).forward_packed(x, padding, layout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, full_output: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask, padding, layout = self.prepare(x, lengths, full_output)
        layers = cast("list[PackedEncoderLayer]", list(self.layers))  # built so
        if layout is None or not all(layer._packable() for layer in layers):
            for k in range(len(self.layers)):
                x = self.run_layer(k, x, padding, layout)
            return x, mask
        rows = layout.pack(x)
        for layer in layers:
            rows = layer.forward_rows(rows, layout)
        return layout.unpack(rows), mask
