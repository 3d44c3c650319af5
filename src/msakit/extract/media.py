"""Decoding a video clip with PyAV: 16 kHz mono audio and frames sampled at a fixed rate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from msakit.extract import require

SAMPLE_RATE = 16000


class ClipError(Exception):
    """A clip that cannot be used (unreadable, no audio track, ...); the corpus goes on."""


@dataclass
class Media:
    audio: np.ndarray
    """(samples,) float32 in [-1, 1], mono, :data:`SAMPLE_RATE` Hz."""
    frames: list[Any]
    """One entry per 1/fps interval that holds a video frame: the RGB uint8 (H, W, 3) frame,
    or what ``on_frame`` made of it."""
    times: list[float]
    """Presentation time (s) of every kept frame."""


def decode(
    path: str,
    fps: float,
    *,
    need_frames: bool = True,
    on_frame: Callable[[np.ndarray], Any] | None = None,
    max_seconds: float | None = None,
) -> Media:
    """Decode ``path``: the first audio track resampled to 16 kHz mono, and at most one frame per
    ``1/fps`` interval of the first video track (the first frame that falls in the interval).
    With ``on_frame``, each kept frame is passed to it as it is decoded and only its result is
    kept (a long video's frames never sit in memory together). With ``max_seconds``, only the
    clip's first ``max_seconds`` are decoded (audio and frames).

    Raises :class:`ClipError` with a short reason when the file cannot be decoded or lacks an
    audio track (or a video track, when ``need_frames``).
    """
    av = require("av")
    try:
        container = av.open(path)
    except FileNotFoundError:
        raise ClipError("no such file") from None
    except Exception as exc:  # av.error.InvalidDataError, PermissionError, ...
        raise ClipError(f"cannot open: {_reason(exc)}") from None
    with container:
        if not container.streams.audio:
            raise ClipError("no audio track")
        if need_frames and not container.streams.video:
            raise ClipError("no video track")
        try:
            audio = _decode_audio(av, container, max_seconds)
        except Exception as exc:
            raise ClipError(f"cannot decode the audio: {_reason(exc)}") from None
    frames: list[np.ndarray] = []
    times: list[float] = []
    if need_frames:
        try:
            with av.open(path) as container:
                frames, times = _decode_frames(container, fps, on_frame, max_seconds)
        except Exception as exc:
            raise ClipError(f"cannot decode the video: {_reason(exc)}") from None
    if audio.size == 0:
        raise ClipError("the audio track is empty")
    return Media(audio=audio, frames=frames, times=times)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode_audio(av, container, max_seconds: float | None = None) -> np.ndarray:
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    limit = None if max_seconds is None else math.ceil(max_seconds * SAMPLE_RATE)
    chunks, samples = [], 0
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
            samples += chunks[-1].size
        if limit is not None and samples >= limit:
            break
    else:
        for out in resampler.resample(None):  # flush
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)[:limit].astype(np.float32, copy=False)


def _decode_frames(container, fps: float, on_frame, max_seconds: float | None = None
                   ) -> tuple[list[Any], list[float]]:
    stream = container.streams.video[0]
    frames, times = [], []
    last_slot = -1
    start = None
    for index, frame in enumerate(container.decode(stream)):
        if frame.pts is not None and frame.time is not None:
            t = float(frame.time)
        else:  # no timestamps: assume the stream's nominal rate
            rate = float(stream.average_rate or 25)
            t = index / rate
        if start is None:
            start = t
        t -= start
        if max_seconds is not None and t >= max_seconds:
            break
        slot = math.floor(t * fps + 1e-6)
        if slot <= last_slot:
            continue
        last_slot = slot
        image = frame.to_ndarray(format="rgb24")
        frames.append(image if on_frame is None else on_frame(image))
        times.append(t)
    return frames, times
