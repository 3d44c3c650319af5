"""Frame-level audio descriptors every 10 ms (100 frames per second) of 16 kHz mono audio.

* ``egemaps`` (default): openSMILE's eGeMAPSv02 low-level descriptors, 25 per frame, in
  openSMILE's order: loudness, alpha ratio, Hammarberg index, spectral slopes 0-500 and
  500-1500 Hz, spectral flux, MFCC 1-4, F0 (semitones from 27.5 Hz; 0 when unvoiced), jitter,
  shimmer, HNR, H1-H2, H1-A3, and formants F1-F3 (frequency, bandwidth, relative level);
* ``compare``: openSMILE's ComParE 2016 low-level descriptors, 65 per frame;
* ``mfcc``: librosa's 13 MFCCs (25 ms window) with their first and second deltas, 39 per frame.

openSMILE's binary and both configurations ship in the ``opensmile`` wheel: nothing is
downloaded.
"""

from __future__ import annotations

import numpy as np

from msakit.extract import require
from msakit.extract.media import SAMPLE_RATE

AUDIO_FEATURES = ("egemaps", "compare", "mfcc")
AUDIO_DIMS = {"egemaps": 25, "compare": 65, "mfcc": 39}
FRAME_RATE = 100  # frames per second of every audio feature set
_MFCC_N = 13


class AudioExtractor:
    """Callable: (samples,) float32 at 16 kHz -> (frames, dim) float32, one frame per 10 ms."""

    def __init__(self, kind: str = "egemaps") -> None:
        if kind not in AUDIO_FEATURES:
            raise ValueError(f"audio features must be one of {', '.join(AUDIO_FEATURES)}")
        self.kind = kind
        self.dim = AUDIO_DIMS[kind]
        self._smile = None
        if kind in ("egemaps", "compare"):
            opensmile = require("opensmile")
            feature_set = (
                opensmile.FeatureSet.eGeMAPSv02 if kind == "egemaps"
                else opensmile.FeatureSet.ComParE_2016
            )
            self._smile = opensmile.Smile(
                feature_set=feature_set,
                feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
            )
        else:
            require("librosa")

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if self._smile is not None:
            frame = self._smile.process_signal(audio, SAMPLE_RATE)
            out = frame.to_numpy(dtype=np.float32)
        else:
            out = self._mfcc(audio)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise RuntimeError(f"{self.kind} gave shape {out.shape}, expected (frames, {self.dim})")
        # Undefined values (e.g. F0 of a silent frame in some builds) become 0, as MMSA does
        # with COVAREP's -inf.
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    @staticmethod
    def _mfcc(audio: np.ndarray) -> np.ndarray:
        import librosa

        hop = SAMPLE_RATE // FRAME_RATE
        mfcc = librosa.feature.mfcc(
            y=audio.astype(np.float32), sr=SAMPLE_RATE, n_mfcc=_MFCC_N, n_fft=512,
            win_length=400, hop_length=hop, center=True,
        )
        width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2)) if mfcc.shape[1] >= 3 else 0
        if width >= 3:
            d1 = librosa.feature.delta(mfcc, width=width, order=1)
            d2 = librosa.feature.delta(mfcc, width=width, order=2)
        else:  # too short for deltas
            d1 = d2 = np.zeros_like(mfcc)
        return np.concatenate([mfcc, d1, d2]).T.astype(np.float32)
