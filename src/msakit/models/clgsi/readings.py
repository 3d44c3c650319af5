"""Where CLGSI's paper and the authors' released code differ: the one table, in code.

The authors' released code (github.com/AZYoung233/CLGSI, commit ``c1070c8``) produced the
paper's numbers and computes several steps differently from the paper. Each difference is a
setting; ``--preset authors`` (:data:`msakit.models.clgsi.presets.CLGSI_AUTHORS`) sets all of
them at once. :data:`DIFFERENCES` is the table; docs/readings.md ("CLGSI: paper vs the authors'
code") shows it as :func:`differences_markdown` renders it (``tests/test_clgsi.py`` checks that
the document holds the rendered table).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    """One step the paper and the authors' code compute differently."""

    what: str
    """The step."""
    paper: str
    """What the paper says (msakit's default, ``--preset paper``)."""
    authors: str
    """What the authors' code does (``--preset authors``)."""
    switch: str
    """The setting that chooses (Markdown)."""


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        what='audio/vision Transformer encoders',
        paper='padding masked, padded frames zeroed, batch trimmed to its longest valid sequence',
        authors=(
            "no mask: every frame of the file's full padded length is attended, padded frames"
            ' as stored'
        ),
        switch='`encoder_mask` (`true` / `false`)',
    ),
    Difference(
        what='frame read for the common features A_c, V_c',
        paper='last valid frame (`length - 1`)',
        authors='index -1 of the padded output (`audio[:, -1, :]`)',
        switch='`common_frame` (`last_valid` / `last_padded`)',
    ),
    Difference(
        what='Subnet GAP (specific features, text, audio, vision)',
        paper='mean over valid positions (tokens, frames)',
        authors=(
            'mean over every padded position (`AdaptiveAvgPool2d(1)`), BERT outputs at '
            'padding tokens included'
        ),
        switch='`subnet_pool` (`valid` / `padded`)',
    ),
    Difference(
        what='initial weights of the 2 encoder layers',
        paper='drawn independently',
        authors='equal (`nn.TransformerEncoder` deep-copies one layer)',
        switch='`clone_encoder_layers` (`false` / `true`)',
    ),
    Difference(
        what='contrastive loss',
        paper='Section 3.4 (`variant="paper"`)',
        authors=(
            'their `contrastive_loss` (`variant="official"`; differences in '
            '`src/msakit/losses/intensity_contrastive.py`)'
        ),
        switch='`variant` (`paper` / `official`)',
    ),
    Difference(
        what='label scale H in the loss',
        paper='3 (MOSI, MOSEI), 1 (SIMS, SIMS v2)',
        authors=(
            '3 on every dataset (`(y + 3) / 3 - 1`) but SIMS v2, whose labels are used as '
            'they are (H = 1)'
        ),
        switch='`label_scale` (`1.0` on SIMS / `3.0`; on SIMS v2 `1.0` in both)',
    ),
    Difference(
        what='SIMS widths d_c, d_s',
        paper='64, 64 (Table 7)',
        authors='128, 128 (`post_text/audio/video_dim`; the Subnets output `post_text_dim`)',
        switch='`common_dim`, `specific_dim`',
    ),
    Difference(
        what='MOSI audio / vision encoder lr',
        paper='1e-3 / 5e-3 (Table 7)',
        authors='5e-3 / 1e-3',
        switch='`lr.audio`, `lr.vision`',
    ),
    Difference(
        what='Subnet reduction r',
        paper='8 on every data set (Sec. 3.3: W_1 in R^{(d_m/8) x d_m})',
        authors='2 on MOSI (`skip_net_reduction`), 8 on MOSEI and SIMS',
        switch='`subnet_reduction` (`8` / `2` on MOSI)',
    ),
    Difference(
        what='batches',
        paper="shuffled (msakit's default for every model; buckets are an opt-in speed setting)",
        authors='shuffled (`DataLoader(shuffle=True)`)',
        switch='`sampler` (`random`, the same; `bucket` to opt out)',
    ),
    Difference(
        what='seeds',
        paper="1111-1115 (MMSA's five; the paper reports no seeds)",
        authors='2222, 3333, 4444 (`run.py`)',
        switch='`seeds`',
    ),
    Difference(
        what='warm-up length',
        paper='`int(0.1 x total steps)`',
        authors='`0.1 x total steps`, unrounded',
        switch='`fractional_warmup` (`false` / `true`)',
    ),
    Difference(
        what='end of training',
        paper="at `epochs` (the schedule's horizon, `warm_up_epochs`) or early stop",
        authors='no cap: past the horizon (where the cosine factor rises again) until early stop',
        switch='`stop_at_horizon` (`true` / `false`)',
    ),
    Difference(
        what='text encoder',
        paper='`bert-base-uncased` (MOSI, MOSEI), `bert-base-chinese` (SIMS): Appendix C',
        authors='the same',
        switch='`--text-encoder`',
    ),
)

HEADER = ("#", "difference", "paper (msakit default)", "authors' code", "setting")


def differences_markdown() -> str:
    """:data:`DIFFERENCES` as a numbered Markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for number, row in enumerate(DIFFERENCES, start=1):
        cells = (str(number), row.what, row.paper, row.authors, row.switch)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
