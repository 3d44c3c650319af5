"""The committed speech fixture (``tests/fixtures/speech``: three sentences spoken by espeak-ng,
see ``make_speech.sh`` there) as 16 kHz audio, and videos made of it with silences between."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from video_clips import FPS, SAMPLE_RATE, make_clip

SPEECH = Path(__file__).parent / "fixtures" / "speech"
SENTENCES = (SPEECH / "sentences.txt").read_text().splitlines()


def utterance(n: int) -> np.ndarray:
    """Sentence ``n`` (1-based) as float32 samples at 16 kHz."""
    import av

    with av.open(str(SPEECH / f"utterance{n}.flac")) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                  for out in resampler.resample(frame)]
    return np.concatenate(chunks).astype(np.float32)


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.findall(r"[a-z']+", text.lower())


def speech_video(path: Path, parts: list[np.ndarray | float], position=(40, 20),
                 face_until: float = float("inf")) -> tuple[Path, list[tuple[float, float]]]:
    """A clip of ``parts`` (samples, or seconds of silence) one after the other, the face at
    ``position`` until ``face_until`` seconds (blank frames after); and the (start, end) in
    seconds of the voice (samples above 1 % of full scale) of every speech part. The audio
    is padded with silence to a whole number of video frames."""
    pieces, spans, t = [], [], 0
    for part in parts:
        if np.isscalar(part):
            piece = np.zeros(round(part * SAMPLE_RATE), np.float32)
        else:
            piece = part
            voiced = np.flatnonzero(np.abs(piece) > 0.01)
            spans.append(((t + voiced[0]) / SAMPLE_RATE, (t + voiced[-1] + 1) / SAMPLE_RATE))
        pieces.append(piece)
        t += len(piece)
    frames = -(-t // (SAMPLE_RATE // FPS))
    audio = np.zeros(frames * (SAMPLE_RATE // FPS), np.float32)
    audio[:t] = np.concatenate(pieces)
    positions = [position if i / FPS < face_until else None for i in range(frames)]
    return make_clip(path, positions, audio=audio), spans
