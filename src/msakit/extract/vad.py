"""The utterances of a long recording: where the voice is (silero-vad) or the recogniser's
segments, shaped into utterances of a useful length.

:class:`VoiceActivity` runs Silero VAD (the ``silero-vad`` package; its model ships inside the
wheel, run by TorchScript) on 16 kHz audio and gives the speech stretches in seconds. Silero's
own settings do the first shaping: stretches shorter than ``min_seconds`` are not speech,
pauses shorter than ``merge_gap`` do not end one, and one longer than ``max_seconds`` is cut at
its longest pause. :func:`shape_utterances` then applies the same three rules to any list of
stretches (a recogniser's segments, or Silero's): stretches closer than
``merge_gap`` are joined while the result stays within ``max_seconds``, longer ones are cut into
equal parts, and those shorter than ``min_seconds`` are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from msakit.core.errors import MsakitError
from msakit.extract import require
from msakit.extract.media import SAMPLE_RATE

SEGMENTERS = ("vad", "asr")
SPEECH_PAD_MS = 100  # Silero pads each stretch by this much on both sides


@dataclass(frozen=True)
class UtteranceRules:
    min_seconds: float = 1.0
    max_seconds: float = 15.0
    merge_gap: float = 0.5

    def check(self) -> None:
        for name, value in (("--min-seconds", self.min_seconds),
                            ("--max-seconds", self.max_seconds),
                            ("--merge-gap", self.merge_gap)):
            if not (math.isfinite(value) and value >= 0):
                raise MsakitError(f"{name} must be a number >= 0, got {value}")
        if self.max_seconds <= 0 or self.max_seconds < self.min_seconds:
            raise MsakitError(f"--max-seconds ({self.max_seconds:g}) must be positive and at "
                              f"least --min-seconds ({self.min_seconds:g})")


class VoiceActivity:
    """Callable: (samples,) float32 at 16 kHz -> [(start, end)] seconds of speech."""

    def __init__(self, rules: UtteranceRules) -> None:
        silero_vad = require("silero_vad")
        self._get = silero_vad.get_speech_timestamps
        self._model = silero_vad.load_silero_vad()
        self.rules = rules

    def __call__(self, audio: np.ndarray) -> list[tuple[float, float]]:
        import torch

        rules = self.rules
        stamps = self._get(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), self._model,
            sampling_rate=SAMPLE_RATE, min_speech_duration_ms=round(1000 * rules.min_seconds),
            max_speech_duration_s=rules.max_seconds,
            min_silence_duration_ms=round(1000 * rules.merge_gap), speech_pad_ms=SPEECH_PAD_MS,
        )
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def shape_utterances(spans: list[tuple[float, float]], rules: UtteranceRules
                     ) -> list[tuple[float, float]]:
    """``spans`` joined, cut and filtered by ``rules`` (see the module docstring), in order."""
    joined: list[list[float]] = []
    for start, end in sorted((float(s), float(e)) for s, e in spans if e > s):
        if joined and start - joined[-1][1] < rules.merge_gap \
                and max(end, joined[-1][1]) - joined[-1][0] <= rules.max_seconds:
            joined[-1][1] = max(end, joined[-1][1])
        else:
            joined.append([start, end])
    out = []
    for start, end in joined:
        parts = max(1, math.ceil((end - start) / rules.max_seconds - 1e-9))
        step = (end - start) / parts
        out += [(start + i * step, start + (i + 1) * step) for i in range(parts)]
    return [(s, e) for s, e in out if e - s >= rules.min_seconds]
