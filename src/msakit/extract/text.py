"""Transcripts: tokenized for the text encoder as MMSA's ``text_bert``, or transcribed offline.

``text_bert`` rows are the token ids, the attention mask and the segment ids of
``[CLS] tokens [SEP]``, padded (or cut) to ``max_length`` tokens, as in MMSA's files. The
tokenizer is the chosen text encoder's (the packaged all-MiniLM-L6-v2 by default, which has the
bert-base-uncased vocabulary).

``--asr pocketsphinx`` transcribes the 16 kHz audio of clips without a text with CMU
pocketsphinx and the US-English acoustic and language models that ship in its wheel.
"""

from __future__ import annotations

import numpy as np

from msakit.encoders.text import DEFAULT_TEXT_ENCODER, encoder_positions, resolve_text_encoder
from msakit.errors import MsakitError
from msakit.extract import require
from msakit.extract.media import SAMPLE_RATE


class Tokenizer:
    """The text encoder's tokenizer; ``encode(texts)`` -> (N, 3, max_length) int64."""

    def __init__(self, name: str | None = DEFAULT_TEXT_ENCODER, max_length: int = 50) -> None:
        from transformers import AutoTokenizer

        from msakit.encoders.text import _quiet_transformers

        if max_length < 3:
            raise MsakitError(f"--max-length must be at least 3 ([CLS] x [SEP]), got {max_length}")
        source = resolve_text_encoder(name)
        try:
            with _quiet_transformers():
                self._tok = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MsakitError(
                f"cannot load the tokenizer of text encoder {source!r}: {first}"
            ) from None
        positions = encoder_positions(name)
        if positions is not None and max_length > positions:
            raise MsakitError(f"--max-length must be at most {positions} (the positions of text "
                              f"encoder {source!r}), got {max_length}")
        self.max_length = max_length
        self.vocab_size = int(len(self._tok))

    def encode(self, texts: list[str]) -> np.ndarray:
        enc = self._tok(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length,
            return_token_type_ids=True, return_attention_mask=True,
        )
        rows = [enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]]
        return np.stack([np.asarray(r, dtype=np.int64) for r in rows], axis=1)


class SpeechRecognizer:
    """Offline English speech recognition with pocketsphinx's bundled models."""

    def __init__(self) -> None:
        pocketsphinx = require("pocketsphinx")
        self._decoder = pocketsphinx.Decoder(loglevel="FATAL")

    def __call__(self, audio: np.ndarray) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        words = hyp.hypstr if hyp is not None else ""
        return " ".join(w for w in words.split() if not w.startswith("<"))


assert SAMPLE_RATE == 16000  # pocketsphinx's en-us model expects 16 kHz
