"""``msakit predict --checkpoint CK --video CLIP [--text "..."]``: sentiment of one new clip.

The checkpoint must have been trained on a file written by ``msakit extract``: its extractor
record (copied by ``msakit train``) says how to turn the clip into features. A checkpoint
trained on other features (the standard MOSI/MOSEI/SIMS files with COVAREP and Facet/OpenFace
features) is refused: features from this extractor would not match what it learned.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msakit.core.errors import MsakitError
from msakit.data.mmsa import SplitData
from msakit.extract import corpus
from msakit.extract.media import ClipError
from msakit.extract.settings import ExtractorSettings
from msakit.extract.text import Tokenizer
from msakit.extract.vision import OpenFaceReader, faces_in


@dataclass
class VideoPrediction:
    prediction: float
    text: str
    from_asr: bool
    audio_frames: int
    face_frames: int


def predict_clip(
    ckpt: Any,
    video: str | os.PathLike[str],
    text: str | None = None,
    *,
    checkpoint: str | os.PathLike[str],
    openface_csv: str | os.PathLike[str] | None = None,
) -> VideoPrediction:
    """Extract ``video`` with the recorded extractor of ``ckpt`` (a loaded checkpoint,
    :func:`msakit.api.load_checkpoint` of the file ``checkpoint``) and predict its sentiment."""
    settings = _recorded_settings(checkpoint, ckpt)
    video = str(video)
    if not Path(video).is_file():
        raise MsakitError(f"{video}: no such file")
    if text is not None and not text.strip():
        text = None
    if text is None and settings.asr is None:
        settings = ExtractorSettings(**{**settings.__dict__, "asr": "pocketsphinx"})
    features = _extract(checkpoint, video, text, settings, openface_csv=openface_csv)
    if features.from_asr and not features.text.strip():
        warnings.warn(f"{video}: speech recognition ({settings.asr}) heard no words: the "
                      "prediction rests on its audio and vision alone (give the "
                      "transcript with --text)", UserWarning, stacklevel=2)
    arrays = _clip_arrays(checkpoint, ckpt, video, features, settings=settings)
    frames = int(arrays["vision_lengths"][0])
    return VideoPrediction(
        prediction=_predict_one(ckpt, arrays),
        text=features.text,
        from_asr=features.from_asr,
        audio_frames=int(arrays["audio_lengths"][0]),
        face_frames=faces_in(arrays["vision"][0, :frames], settings.vision_features),
    )


def _recorded_settings(checkpoint: str | os.PathLike[str], ckpt) -> ExtractorSettings:
    """The extractor settings the checkpoint's training file was written with."""
    record = ckpt.state.get("extractor")
    if not record:
        raise MsakitError(
            f"{checkpoint}: trained on features that msakit extract did not write (e.g. the "
            "standard MOSI/MOSEI/SIMS files: COVAREP audio, Facet/OpenFace vision); features "
            "extracted from a video would not match them. Train on a file from 'msakit extract' "
            "to predict from videos"
        )
    settings = ExtractorSettings.from_dict(record["settings"])
    if (settings.audio_dim, settings.vision_dim) != (ckpt.dims.audio, ckpt.dims.vision):
        raise MsakitError(
            f"{checkpoint}: its extractor record ({settings.audio_dim}/{settings.vision_dim}) "
            f"does not match its model ({ckpt.dims.audio}/{ckpt.dims.vision})"
        )
    return settings


def _extract(
    checkpoint: str | os.PathLike[str], video: str, text: str | None,
    settings: ExtractorSettings, *, openface_csv: str | os.PathLike[str] | None,
):
    """The clip's features with the recorded extractors (an OpenFace CSV when they say so)."""
    openface_dir = None
    if settings.vision_features == "openface":
        if openface_csv is None or not Path(openface_csv).is_file():
            raise MsakitError(
                f"{checkpoint}: its vision features come from OpenFace 2.0; run OpenFace's "
                "FeatureExtraction on the clip and give its CSV with --openface-csv FILE"
            )
        openface_dir = str(Path(openface_csv).parent)
    corpus._init_worker(settings, openface_dir)
    if openface_dir is not None:
        corpus._WORKER["vision"] = OpenFaceReader(openface_dir, file=openface_csv)
    try:
        return corpus.extract_clip(Path(video).stem, video, text)
    except ClipError as exc:
        raise MsakitError(f"{video}: {exc}") from None


def _clip_arrays(
    checkpoint: str | os.PathLike[str], ckpt, video: str, features, *,
    settings: ExtractorSettings, tokenizer=None,
) -> dict[str, np.ndarray]:
    """The clip as a one-sample split in the file's layout, its token ids checked against the
    checkpoint's vocabulary (``tokenizer``: the settings' one, loaded once by a caller that
    predicts many clips)."""
    if tokenizer is None:
        tokenizer = Tokenizer(settings.text_encoder, settings.max_length)
    clip = corpus.Clip(0, Path(video).stem, video, features.text, 0.0, "test")
    arrays = corpus.build_split([clip], {clip.id: features}, tokenizer, settings=settings,
                                labelled=False)
    vocab = int(ckpt.state["text_encoder_config"].get("vocab_size", 0))
    if vocab and int(arrays["text_bert"][:, 0].max()) >= vocab:
        raise MsakitError(
            f"{checkpoint}: the tokenizer {settings.text_encoder} gives ids beyond the text "
            f"encoder's vocabulary ({vocab})"
        )
    return arrays


def _predict_one(ckpt, arrays: dict[str, np.ndarray]) -> float:
    """The checkpoint's model's prediction for the one clip of ``arrays``
    (:meth:`msakit.api.LoadedCheckpoint.predictions`: no autograd, finite or one error)."""
    split = SplitData(
        text_bert=arrays["text_bert"],
        audio=arrays["audio"],
        vision=arrays["vision"],
        audio_lengths=arrays["audio_lengths"],
        vision_lengths=arrays["vision_lengths"],
        labels=np.full(1, np.nan, dtype=np.float32),
        ids=arrays["id"],
        labelled=False,
    )
    return float(ckpt.predictions(split)[0])
