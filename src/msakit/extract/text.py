"""Transcripts tokenized for the text encoder as MMSA's ``text_bert``.

``text_bert`` rows are the token ids, the attention mask and the segment ids of
``[CLS] tokens [SEP]``, padded (or cut) to ``max_length`` tokens, as in MMSA's files. The
tokenizer is the chosen text encoder's (the packaged all-MiniLM-L6-v2 by default, which has the
bert-base-uncased vocabulary).

Clips without a text are transcribed by :mod:`msakit.extract.asr` (``--asr whisper`` or
``pocketsphinx``).
"""

from __future__ import annotations

import numpy as np

from msakit.core.errors import MsakitError
from msakit.encoders.text import (
    DEFAULT_TEXT_ENCODER,
    _quiet_transformers,
    encoder_positions,
    resolve_text_encoder,
)


class Tokenizer:
    """The text encoder's tokenizer; ``encode(texts)`` -> (N, 3, max_length) int64."""

    def __init__(self, name: str | None = DEFAULT_TEXT_ENCODER, max_length: int = 50) -> None:
        from transformers import AutoTokenizer

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
