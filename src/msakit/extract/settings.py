"""The extractor choices recorded in every extracted file and in checkpoints trained on it.

An extracted ``.npz`` holds one extra entry, ``msakit_extractor``: a JSON string (a plain
unicode array, readable with ``allow_pickle=False``; msakit's feature reader skips it) with

* ``settings``: everything that decides what the features mean (audio and vision feature sets
  and sizes, frame rates, tokenizer, caps, ASR). Files and checkpoints are compatible exactly
  when their settings are equal: ``merge`` and ``predict --video`` compare them;
* ``versions`` of the extractor packages, ``source`` (the clips CSV), ``shard``,
  ``rows`` (the CSV row of every sample, per split, used by ``merge`` to restore CSV order),
  ``asr`` (ids whose text came from speech recognition) and ``failures`` (clips left out).

``msakit train`` copies the whole record into every checkpoint (``"extractor"``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from msakit.encoders.text import DEFAULT_TEXT_ENCODER
from msakit.errors import MsakitError
from msakit.extract.audio import AUDIO_DIMS, AUDIO_FEATURES, FRAME_RATE
from msakit.extract.media import SAMPLE_RATE
from msakit.extract.vision import OPENCV_DIM, OPENFACE_DIM

METADATA_KEY = "msakit_extractor"
FORMAT = "msakit-extractor-1"
VISION_FEATURES = ("opencv", "openface")
ASR_ENGINES = ("pocketsphinx",)


_AUDIO_METHODS = {
    "egemaps": "openSMILE eGeMAPSv02 low-level descriptors (msakit.extract.audio)",
    "compare": "openSMILE ComParE_2016 low-level descriptors (msakit.extract.audio)",
    "mfcc": "librosa 13 MFCC (25 ms window, 10 ms hop) + delta + delta-delta "
            "(msakit.extract.audio)",
}
_VISION_METHODS = {
    "opencv": "largest face of OpenCV haarcascade_frontalface_default (scale 1.1, 5 neighbours); "
              "haarcascade_eye, haarcascade_smile; HOG 4x4x9 and LBP riu2 2x2x10 of the aligned "
              "64x64 crop (msakit.extract.vision)",
    "openface": "OpenFace 2.0 FeatureExtraction CSV columns OPENFACE_COLUMNS "
                "(msakit.extract.vision)",
}


DEFAULT_MAX_SECONDS = 60.0
"""Seconds of each clip that ``msakit extract`` reads by default (``--max-seconds``): the rest
of a longer clip is left out, so that one long video cannot pad every clip of a corpus to its
length (a corpus is padded to its longest clip)."""


@dataclass(frozen=True)
class ExtractorSettings:
    audio_features: str = "egemaps"
    vision_features: str = "opencv"
    fps: float = 10.0
    text_encoder: str = DEFAULT_TEXT_ENCODER
    max_length: int = 50
    asr: str | None = None
    max_audio_frames: int | None = None
    max_vision_frames: int | None = None
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    """Seconds of each clip read (None: all, as records written before this setting)."""

    def check(self) -> None:
        if self.audio_features not in AUDIO_FEATURES:
            raise MsakitError(
                f"--audio-features must be one of {', '.join(AUDIO_FEATURES)}, "
                f"got {self.audio_features!r}"
            )
        if self.vision_features not in VISION_FEATURES:
            raise MsakitError(
                f"--vision-features must be opencv or 'openface DIR', got {self.vision_features!r}"
            )
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise MsakitError(f"--fps must be a positive number, got {self.fps}")
        if self.asr is not None and self.asr not in ASR_ENGINES:
            raise MsakitError(f"--asr must be pocketsphinx, got {self.asr!r}")
        for name, value in (("--max-audio-frames", self.max_audio_frames),
                            ("--max-vision-frames", self.max_vision_frames)):
            if value is not None and value < 1:
                raise MsakitError(f"{name} must be at least 1, got {value}")
        if self.max_seconds is not None and not (
            self.max_seconds > 0 and np.isfinite(self.max_seconds)
        ):
            raise MsakitError(f"--max-seconds must be a positive number, got {self.max_seconds}")

    @property
    def audio_dim(self) -> int:
        return AUDIO_DIMS[self.audio_features]

    @property
    def vision_dim(self) -> int:
        return OPENCV_DIM if self.vision_features == "opencv" else OPENFACE_DIM

    def to_dict(self, vocab_size: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "audio": {"features": self.audio_features, "dim": self.audio_dim,
                      "method": _AUDIO_METHODS[self.audio_features],
                      "sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE,
                      "max_frames": self.max_audio_frames},
            "vision": {"features": self.vision_features, "dim": self.vision_dim,
                       "method": _VISION_METHODS[self.vision_features],
                       "fps": float(self.fps), "max_frames": self.max_vision_frames},
            "text": {"encoder": self.text_encoder, "max_length": self.max_length,
                     "vocab_size": vocab_size, "asr": self.asr},
            "max_seconds": self.max_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractorSettings:
        try:
            return cls(
                audio_features=d["audio"]["features"],
                vision_features=d["vision"]["features"],
                fps=float(d["vision"]["fps"]),
                text_encoder=d["text"]["encoder"],
                max_length=int(d["text"]["max_length"]),
                asr=d["text"]["asr"],
                max_audio_frames=d["audio"]["max_frames"],
                max_vision_frames=d["vision"]["max_frames"],
                max_seconds=d.get("max_seconds"),  # absent from earlier records: no cap
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MsakitError(f"unreadable extractor settings ({exc})") from None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("msakit", "opensmile", "av", "opencv-python-headless", "librosa",
                 "pocketsphinx", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def encode_metadata(record: dict[str, Any]) -> np.ndarray:
    return np.array(json.dumps(record, sort_keys=True))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The extractor record of an extracted ``.npz``; None for other feature files (MMSA
    pickles, converted standard files)."""
    from msakit.data.safe_format import is_zip

    try:
        with open(path, "rb") as f:
            if not is_zip(f.read(8)):
                return None
        with np.load(path, allow_pickle=False) as archive:
            if METADATA_KEY not in archive.files:
                return None
            record = json.loads(str(archive[METADATA_KEY]))
    except (OSError, ValueError) as exc:
        raise MsakitError(f"{path}: cannot read the extractor record ({exc})") from None
    if not isinstance(record, dict) or record.get("settings", {}).get("format") != FORMAT:
        raise MsakitError(f"{path}: '{METADATA_KEY}' is not an msakit extractor record")
    return record


def describe(settings: dict[str, Any]) -> str:
    """One phrase for messages, e.g. 'egemaps audio (25), opencv vision (206) at 10 fps'."""
    a, v = settings["audio"], settings["vision"]
    return (f"{a['features']} audio ({a['dim']}), {v['features']} vision ({v['dim']}) at "
            f"{v['fps']:g} fps, tokenizer {settings['text']['encoder']}")
