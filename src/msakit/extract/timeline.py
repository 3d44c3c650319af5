"""A video's sentiment timeline as files: ``timeline.csv`` (or ``timeline.json``) and
``timeline.png``.

One row per utterance: ``start`` and ``end`` (seconds from the start of the video),
``transcript``, ``sentiment`` (the checkpoint's prediction) and ``face_share`` (the share of the
utterance's sampled frames in which the face extractor found a face; empty when it has no
frame). The picture shows each utterance's sentiment as a bar over its time span (numbered),
and under it, on the same time axis, the numbered transcripts.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

from msakit.core.files import atomic_write, write_text_atomic

COLUMNS = ("start", "end", "transcript", "sentiment", "face_share")
FORMATS = ("csv", "json")
_DPI = 120


@dataclass(frozen=True)
class Row:
    start: float
    end: float
    transcript: str
    sentiment: float
    face_share: float  # NaN: no sampled frame in the utterance

    def as_dict(self) -> dict:
        d = asdict(self)
        d["start"], d["end"] = round(self.start, 3), round(self.end, 3)
        d["sentiment"] = round(self.sentiment, 4)
        d["face_share"] = None if math.isnan(self.face_share) else round(self.face_share, 4)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        share = d["face_share"]
        return cls(float(d["start"]), float(d["end"]), str(d["transcript"]),
                   float(d["sentiment"]), math.nan if share is None else float(share))


def write_table(folder: Path, rows: list[Row], fmt: str, video: str) -> Path:
    """``folder/timeline.csv`` or ``folder/timeline.json`` (with the video's path)."""
    if fmt == "json":
        text = json.dumps({"video": video, "utterances": [r.as_dict() for r in rows]},
                          indent=1, ensure_ascii=False) + "\n"
        return write_text_atomic(folder / "timeline.json", text)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        d = row.as_dict()
        writer.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
    return write_text_atomic(folder / "timeline.csv", buffer.getvalue())


def draw(folder: Path, rows: list[Row], *, title: str, duration: float,
         label_range: tuple[float, float]) -> Path:
    """``folder/timeline.png``: the sentiment over time, the transcripts under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = min(24.0, max(8.0, 0.35 * duration))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    try:
        _draw_sentiment(top, rows, label_range)
        _draw_transcripts(bottom, rows, inches_per_second=width / max(duration, 1e-6))
        top.set_title(title, fontsize=10)
        bottom.set_xlim(0, max(duration, 1e-6))
        bottom.set_xlabel("time (s)")
        fig.tight_layout()
        with atomic_write(folder / "timeline.png") as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    return folder / "timeline.png"


def _draw_sentiment(ax, rows: list[Row], label_range: tuple[float, float]) -> None:
    low, high = label_range
    for n, row in enumerate(rows, 1):
        colour = "#2a9d5c" if row.sentiment >= 0 else "#c8433a"
        ax.fill_between([row.start, row.end], 0, row.sentiment, color=colour, alpha=0.35,
                        linewidth=0)
        ax.plot([row.start, row.end], [row.sentiment] * 2, color=colour, linewidth=2)
        ax.annotate(str(n), ((row.start + row.end) / 2, row.sentiment), fontsize=8,
                    ha="center", va="bottom" if row.sentiment >= 0 else "top")
    if len(rows) > 1:
        ax.plot([(r.start + r.end) / 2 for r in rows], [r.sentiment for r in rows],
                color="0.4", linewidth=0.8, linestyle=":")
    margin = 0.08 * (high - low)
    ax.set_ylim(min(low, *(r.sentiment for r in rows)) - margin,
                max(high, *(r.sentiment for r in rows)) + margin)
    ax.axhline(0, color="0.3", linewidth=0.7)
    ax.set_ylabel("sentiment")
    ax.grid(axis="y", alpha=0.3)


def _draw_transcripts(ax, rows: list[Row], *, inches_per_second: float) -> None:
    """Each transcript wrapped to its utterance's width, at most four lines (then '…')."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    for n, row in enumerate(rows, 1):
        ax.axvspan(row.start, row.end, color="0.92" if n % 2 else "0.85", linewidth=0)
        chars = max(4, int((row.end - row.start) * inches_per_second * 72 / 4.4))
        lines = textwrap.wrap(f"{n}. {row.transcript or '(no words)'}", chars) or [f"{n}."]
        if len(lines) > 4:
            lines = [*lines[:3], textwrap.shorten(" ".join(lines[3:]), chars, placeholder="…")]
        ax.text(row.start + 0.02 * (row.end - row.start), 0.95, "\n".join(lines), fontsize=7,
                va="top", ha="left", clip_on=True)
